"""The harness's command line: ``python3 -m tools.harness COMMAND`` (or ``tools/stack.py``).

    up broker postgres       start what is missing (or unusable); write .run/stack.env
    down                     stop what `up` started
    odoo-src [--no-download] print the Odoo 18.0 source folder, or nothing
    odoo-launcher            print the script that starts Odoo from that folder
    odoo-conf FILE [--http-port N] [--set KEY=VALUE ...]   write our Odoo configuration
    ensure-tools             apt-get install docker-compose, gettext, chromium, graphviz if missing
    with-services CMD...     run CMD while `nameko run services` runs (needs the venv)
    run                      `make run` (needs the venv)

Settings come from the environment: AMQP_URI, RABBIT_API_URI (:mod:`.broker`), PGHOST, PGPORT,
PGUSER, PGPASSWORD, COMPUTE_BRIDGE_PG_PORT (:mod:`.postgres`), ODOO_SRC (:mod:`.odoo_server`),
COMPUTE_BRIDGE_RUN_DIR (``<repo>/.run``: data of private nodes, logs, ``stack.env``).
"""

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys

from . import broker, postgres
from .common import RUN_DIR, STATE_FILE, HarnessError, is_root, log, read_state, write_state
from .odoo_server import find_odoo_src, launcher, write_odoo_conf
from .process import Stopped, ignore_stop_signals, stop_on_signals

# command -> Debian package. Tests that need a missing one skip with a loud line, so failing to
# install one is reported here and is not an error.
TEST_TOOLS = {
    "docker-compose": "docker-compose",  # tests/unit/test_compose.py: `docker-compose config`
    "msgfmt": "gettext",  # checks the addon's .po files
    "chromium": "chromium",  # Odoo's browser (tour) tests
    "dot": "graphviz",  # tests/unit/test_diagrams.py redraws docs/*.svg (make diagrams)
}


def ensure_tools():
    packages = [pkg for command, pkg in TEST_TOOLS.items() if not shutil.which(command)]
    if not packages:
        return
    if not is_root() or not shutil.which("apt-get"):
        log("not root or no apt-get: not installing %s", " ".join(packages))
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    for package in packages:  # one at a time: one unavailable package must not stop the others
        log("installing %s with apt-get", package)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                               package], check=False, env=env)
        if done.returncode != 0:
            log("!!! %s is still missing: the tests that need it will be skipped", package)


def up(parts):
    state = read_state()
    if "broker" in parts:
        broker.up(state)
    if "postgres" in parts:
        postgres.up(state)
    write_state(state)


def down():
    ignore_stop_signals()  # a cleanup signalled again (make forwards SIGTERM) must still finish
    state = read_state()
    broker.down(state)
    postgres.down(state)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(STATE_FILE)


def with_services(command):
    """Run ``command`` while ``nameko run --broker $AMQP_URI services`` runs; its exit status."""
    from .nameko_run import NamekoRun, wait_compute

    stop_on_signals()
    services = NamekoRun(["--broker", os.environ["AMQP_URI"]],
                         output=os.path.join(RUN_DIR, "services.log"))
    print("\n==> starting the Nameko services (nameko run services)", flush=True)
    try:
        services.start()
        wait_compute(os.environ["AMQP_URI"], process=services)
        return subprocess.call(command)
    except Stopped as stopped:
        return 128 + stopped.signum
    except RuntimeError as error:
        print("%s; the end of %s:\n%s" % (error, services.output, services.log()[-3000:]),
              file=sys.stderr)
        return 1
    finally:
        ignore_stop_signals()
        services.stop()


def parser():
    main_parser = argparse.ArgumentParser(prog="python3 -m tools.harness",
                                          description=__doc__.split("\n")[0])
    sub = main_parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="start what is missing and write .run/stack.env")
    up_parser.add_argument("parts", nargs="+", choices=["broker", "postgres"])
    sub.add_parser("down", help="stop what 'up' started")
    src = sub.add_parser("odoo-src", help="print the Odoo source folder (download if allowed)")
    src.add_argument("--no-download", action="store_true")
    sub.add_parser("odoo-launcher", help="print the script that starts Odoo (see odoo_server)")
    sub.add_parser("state", help="print the state file as JSON")
    conf = sub.add_parser("odoo-conf", help="write an Odoo configuration file for this checkout")
    conf.add_argument("path")
    conf.add_argument("--http-port", type=int)
    conf.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                      help="a further option, or a default replaced (repeatable)")
    sub.add_parser("ensure-tools", help="apt-get install the test tools that are missing")
    services = sub.add_parser("with-services", help="run a command while the services run")
    services.add_argument("cmd", nargs=argparse.REMAINDER)
    sub.add_parser("run", help="make run: the whole stack in the foreground")
    return main_parser


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "up":
        up(args.parts)
    elif args.command == "down":
        down()
    elif args.command == "odoo-src":
        path = find_odoo_src(download=not args.no_download)
        if path:
            print(path)
    elif args.command == "odoo-launcher":
        path = find_odoo_src(download=False)
        if not path:
            raise HarnessError("no Odoo 18.0 source: set ODOO_SRC")
        print(launcher(path))
    elif args.command == "odoo-conf":
        write_odoo_conf(args.path, args.http_port, args.extra)
    elif args.command == "state":
        print(json.dumps(read_state(), indent=2))
    elif args.command == "ensure-tools":
        ensure_tools()
    elif args.command == "with-services":
        return with_services(args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd)
    elif args.command == "run":
        from .run import main as run_main

        return run_main()
    return 0
