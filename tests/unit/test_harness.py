"""The harness's decisions (tools/harness), against real sockets on this machine.

What answers at a broker address decides what ``make run``, ``make test`` and ``make bench`` do:
use it, start a private node, or stop with one line saying what to enable. Listeners here stand
for what a user may have running: a web server on the AMQP port, a RabbitMQ without its management
plugin (it answers AMQP's protocol header), a management API that refuses the credentials or
belongs to another node.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tools.harness import broker, cluster, postgres, process
from tools.harness.common import REPO, HarnessError, free_port
from tools.harness.odoo_server import is_odoo_tree, write_odoo_conf

CONNECTION_START = b"\x01\x00\x00\x00\x00\x01\xf4"  # the start of a method frame on channel 0


class Listener:
    """A TCP listener on 127.0.0.1 that answers each connection with ``reply`` and closes."""

    def __init__(self, reply=b""):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.reply:
                    conn.recv(8)
                    conn.sendall(self.reply)

    def close(self):
        self.sock.close()


class ManagementApi:
    """An HTTP server answering /api/overview with ``status`` and the AMQP ``ports`` listed."""

    def __init__(self, status=200, ports=()):
        body = json.dumps({"listeners": [{"protocol": "amqp", "port": port} for port in ports]})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(status if self.path == "/api/overview" else 404)
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.uri = "http://guest:guest@127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listeners():
    opened = []

    def open_(kind, *args, **kwargs):
        opened.append(kind(*args, **kwargs))
        return opened[-1]

    yield open_
    for item in opened:
        item.close()


def amqp(port):
    return "pyamqp://guest:guest@127.0.0.1:%d" % port


def closed_api():
    return "http://guest:guest@127.0.0.1:%d" % free_port()


def test_nothing_listening_means_a_private_node_there():
    port = free_port()
    assert broker.check(amqp(port), closed_api()) == broker.ABSENT
    assert broker.decide(broker.ABSENT, explicit=True, local=True) == broker.START_THERE
    assert broker.decide(broker.ABSENT, explicit=True, local=False) == broker.REFUSE


def test_a_listener_that_is_not_a_broker_is_never_used(listeners):
    web = listeners(Listener, b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert broker.check(amqp(web.port), closed_api()) == broker.NOT_AMQP
    assert broker.decide(broker.NOT_AMQP, explicit=False, local=True) == broker.START_ELSEWHERE
    assert broker.decide(broker.NOT_AMQP, explicit=True, local=True) == broker.REFUSE


def test_a_broker_without_management_api_is_never_used(listeners):
    rabbit = listeners(Listener, CONNECTION_START)
    assert broker.amqp_speaks("127.0.0.1", rabbit.port)
    assert broker.check(amqp(rabbit.port), closed_api()) == broker.NO_MANAGEMENT
    assert broker.decide(broker.NO_MANAGEMENT, explicit=False, local=True) == \
        broker.START_ELSEWHERE
    assert broker.decide(broker.NO_MANAGEMENT, explicit=True, local=True) == broker.REFUSE


def test_the_management_api_must_accept_us_and_belong_to_that_broker(listeners):
    rabbit = listeners(Listener, CONNECTION_START)
    refusing = listeners(ManagementApi, status=401)
    other = listeners(ManagementApi, ports=[rabbit.port + 1])
    same = listeners(ManagementApi, ports=[rabbit.port])
    assert broker.check(amqp(rabbit.port), refusing.uri) == broker.API_REFUSED
    assert broker.check(amqp(rabbit.port), other.uri) == broker.OTHER_NODE
    assert broker.check(amqp(rabbit.port), same.uri) == broker.READY
    assert broker.decide(broker.READY, explicit=True, local=True) == broker.USE


def test_an_explicit_amqp_uri_without_management_stops_with_one_line(listeners, tmp_path):
    rabbit = listeners(Listener, CONNECTION_START)
    env = dict(os.environ, AMQP_URI=amqp(rabbit.port), RABBIT_API_URI=closed_api(),
               COMPUTE_BRIDGE_RUN_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "stack.py"), "up",
                           "broker"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert "rabbitmq-plugins enable rabbitmq_management" in done.stderr
    assert not (tmp_path / "stack.env").exists()


def test_postgres_on_the_chosen_port_that_lets_nobody_in_is_refused(listeners, tmp_path):
    """Something else on COMPUTE_BRIDGE_PG_PORT (set explicitly) is neither used nor replaced."""
    other = listeners(Listener)
    with pytest.raises(HarnessError) as caught:
        postgres.up({}, {"COMPUTE_BRIDGE_PG_PORT": str(other.port)})
    assert "does not let the role 'odoo' in" in str(caught.value)


def test_a_private_cluster_moves_off_ports_another_program_has(monkeypatch, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = (port - 10, port, port + 10)  # the second node's port is the one taken
        monkeypatch.setattr(cluster, "CLUSTER_AMQP_PORTS", first)
        monkeypatch.setattr(broker, "RUN_DIR", str(tmp_path))
        ports, _epmd = cluster.cluster_ports({})
        assert ports != first
        assert not any(broker.port_open("127.0.0.1", p, timeout=0.2) for p in ports)
        # one named by the environment is kept, whoever listens there
        assert cluster.cluster_ports({cluster.CLUSTER_AMQP_PORTS_ENV: "%d" % port})[0] == (port,)


def test_a_node_of_ours_left_over_counts_as_ours_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setattr(broker, "RUN_DIR", str(tmp_path))
    node = broker.RabbitNode("leftover", 5999, 15999)
    os.makedirs(node.base)
    with open(os.path.join(node.base, "pid"), "w") as handle:
        handle.write(str(os.getpid()))  # a live process, but not that node
    assert not node.leftover()
    os.unlink(os.path.join(node.base, "pid"))
    assert not node.leftover()


def test_stop_ends_a_process_that_ignores_sigterm_and_its_group():
    script = ("import os, signal, subprocess, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    proc = process.spawn([sys.executable, "-c", script], subprocess.PIPE)
    child = int(proc.stdout.readline())
    assert process.stop(proc, grace=1) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists("/proc/%d" % child):
        with open("/proc/%d/stat" % child) as handle:
            if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
                break  # killed, waiting for init to reap it
        time.sleep(0.1)
    else:
        assert not os.path.exists("/proc/%d" % child), "the child survived its group's stop"
    proc.stdout.close()


def test_stop_sends_sigterm_first():
    proc = process.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    assert process.stop(proc) == -signal.SIGTERM


def test_an_odoo_tree_needs_a_launcher_script(tmp_path):
    """Odoo is started through its tree's launcher: `python -m odoo` cannot re-exec itself."""
    (tmp_path / "odoo").mkdir()
    (tmp_path / "odoo" / "release.py").write_text("version_info = (18, 0, 0, 'final', 0, '')\n")
    assert not is_odoo_tree(str(tmp_path))
    (tmp_path / "setup").mkdir()
    (tmp_path / "setup" / "odoo").write_text("import odoo\nodoo.cli.main()\n")
    assert is_odoo_tree(str(tmp_path))


def test_one_odoo_configuration_writer(tmp_path):
    conf = tmp_path / "odoo.conf"
    write_odoo_conf(str(conf), 8123, ["db_name=x", "log_level=info", "http_interface="])
    lines = conf.read_text().splitlines()
    assert lines[0] == "[options]"
    options = dict(line.split(" = ", 1) for line in lines[1:])
    assert options["addons_path"] == REPO
    assert (options["http_port"], options["gevent_port"]) == ("8123", "8124")
    assert (options["db_name"], options["log_level"]) == ("x", "info")
    assert options["http_interface"] == ""
    assert len(lines) == len(options) + 1  # a replaced default is written once
