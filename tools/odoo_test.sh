#!/usr/bin/env bash
# The Odoo layers, run by tools/test.sh once the broker, PostgreSQL and the services are up
# (AMQP_URI, PG*, ODOO_SRC exported):
#   1. a test database with compute_bridge installed, then the addon's tests with pytest-odoo
#      (with Odoo's HTTP server, for the XML-RPC, HttpCase and tour tests);
#   2. the same tests once more through Odoo's own runner on a fresh database
#      (--test-enable -i compute_bridge), so at_install behaviour is covered.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${VENV:-$REPO/.venv}/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
DB=${COMPUTE_BRIDGE_TEST_DB:-cb_test}
HTTP_PORT=${COMPUTE_BRIDGE_TEST_HTTP_PORT:-8169}
export PYTHONPATH=$ODOO_SRC${PYTHONPATH:+:$PYTHONPATH}
CONF=$RUN_DIR/odoo-test.conf

python3 tools/stack.py odoo-conf "$CONF" --http-port "$HTTP_PORT"

# pytest-odoo 2.1.3's `load_http` fixture calls odoo.service.server.start(stop=True) once per test
# module. With Odoo 18 that reads a test report that does not exist ('NoneType' object has no
# attribute 'wasSuccessful') and binds the HTTP port again for the next module ("Address already
# in use"). This plugin makes start() spawn one HTTP thread for the whole session instead.
PLUGIN_DIR=$RUN_DIR/pytest-plugins
mkdir -p "$PLUGIN_DIR"
cat > "$PLUGIN_DIR/odoo18_http_once.py" <<'PYEOF'
"""Written by tools/odoo_test.sh: one Odoo HTTP server per pytest session (see there)."""


def pytest_configure(config):
    from odoo.service import server as odoo_server

    def start_http_once(preload=None, stop=False):
        # pytest-odoo may already have created the (not yet listening) server object.
        if odoo_server.server is None:
            import odoo.http

            odoo_server.server = odoo_server.ThreadedServer(odoo.http.root)
        if getattr(odoo_server.server, "httpd", None) is None:
            odoo_server.server.http_spawn()
            # Odoo makes request threads non-daemon so that a server stop waits for them; an
            # XML-RPC client's keep-alive connection would then keep pytest from exiting.
            odoo_server.server.httpd.daemon_threads = True
        return 0

    odoo_server.start = start_http_once


def pytest_unconfigure(config):
    from odoo.service import server as odoo_server

    httpd = getattr(odoo_server.server, "httpd", None)
    if httpd is not None:
        httpd.shutdown()
PYEOF

odoo() { "$PY" -m odoo -c "$CONF" "$@"; }
dropdb_if() { "$PY" - "$1" <<'PYEOF'
import sys, odoo
from odoo.tools import config
config.parse_config(["-c", __import__("os").environ["CONF"]])
config["list_db"] = True  # the server runs with list_db = False, which also blocks exp_drop
from odoo.service import db
if sys.argv[1] in db.list_dbs(True):
    db.exp_drop(sys.argv[1])
PYEOF
}
export CONF
rc=0

echo "==> Odoo: creating test database $DB with compute_bridge installed"
dropdb_if "$DB"
odoo -d "$DB" -i compute_bridge --stop-after-init || exit 1

echo "==> Odoo: the addon's tests with pytest-odoo (real Odoo, real HTTP server, real services)"
PYTHONPATH=$PLUGIN_DIR:$PYTHONPATH "$PY" -m pytest -p no:pytest_nameko -p no:cacheprovider \
    -p odoo18_http_once --odoo-config "$CONF" --odoo-database "$DB" --odoo-http \
    compute_bridge/tests 2>&1 | tee "$RUN_DIR/pytest-odoo.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && rc=1

echo "==> Odoo: the same tests through Odoo's own runner (--test-enable -i compute_bridge)"
dropdb_if "${DB}_runner"
odoo -d "${DB}_runner" -i compute_bridge --test-enable --test-tags /compute_bridge \
    --stop-after-init --log-level=test 2>&1 | tee "$RUN_DIR/odoo-runner.log"
run_rc=${PIPESTATUS[0]}
# Odoo's runner exits 0 even when tests fail; its log says "N failed, N error(s) of N tests".
# Match that summary only: a log line such as "operation 1 failed: ..." is not a test failure.
summary=$(grep -E 'compute_bridge: [0-9]+ tests|[0-9]+ failed, [0-9]+ error\(s\) of [0-9]+ tests|Ran [0-9]+ tests' "$RUN_DIR/odoo-runner.log" | tail -1)
echo "odoo runner: ${summary#*odoo.tests.result: }" > "$RUN_DIR/odoo-runner-summary.txt"
if [ "$run_rc" -ne 0 ] || grep -qE '(ERROR|CRITICAL) .*(FAIL|ERROR):|[1-9][0-9]* failed, [0-9]+ error|[0-9]+ failed, [1-9][0-9]* error\(s\)' "$RUN_DIR/odoo-runner.log"; then
    echo "Odoo's runner reported failures" >&2
    rc=1
fi
echo "$(cat "$RUN_DIR/odoo-runner-summary.txt")"

echo "==> Odoo: uninstalling compute_bridge from ${DB}_runner"
"$PY" - "${DB}_runner" > "$RUN_DIR/odoo-uninstall.txt" <<'PYEOF' || rc=1
import os, sys
import odoo
from odoo.tools import config
config.parse_config(["-c", os.environ["CONF"]])
from odoo.modules.registry import Registry
db = sys.argv[1]
with Registry(db).cursor() as cr:
    env = odoo.api.Environment(cr, odoo.SUPERUSER_ID, {})
    env["ir.module.module"].search([("name", "=", "compute_bridge")]).button_immediate_uninstall()
with Registry(db).cursor() as cr:
    cr.execute("SELECT state FROM ir_module_module WHERE name = 'compute_bridge'")
    state = cr.fetchone()[0]
    cr.execute("SELECT to_regclass('compute_operation'), to_regclass('compute_service_instance')")
    tables = [t for t in cr.fetchone() if t]
    cr.execute("SELECT count(*) FROM ir_model WHERE model LIKE 'compute.%'")
    models = cr.fetchone()[0]
ok = state == "uninstalled" and not tables and not models
print("uninstall: module %s, tables left %s, models left %s -> %s"
      % (state, tables or "none", models, "ok" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PYEOF

cat "$RUN_DIR/odoo-uninstall.txt"
dropdb_if "${DB}_runner"
exit $rc
