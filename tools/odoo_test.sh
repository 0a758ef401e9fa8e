#!/usr/bin/env bash
# The Odoo layers, run by tools/test.sh once the broker, PostgreSQL and the services are up
# (AMQP_URI, PG*, ODOO_SRC exported):
#   1. a test database with compute_bridge installed, then the addon's tests with pytest-odoo
#      (with Odoo's HTTP server, for the XML-RPC, HttpCase and tour tests);
#   2. the same tests once more through Odoo's own runner on a fresh database
#      (--test-enable -i compute_bridge), so at_install behaviour is covered;
#   3. compute_bridge uninstalled from that database: nothing of it may be left.
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

odoo() { "$PY" "$(python3 tools/stack.py odoo-launcher)" -c "$CONF" "$@"; }
odoo_db() { "$PY" tools/odoo_db.py -c "$CONF" "$@"; }
rc=0

echo "==> Odoo: creating test database $DB with compute_bridge installed"
odoo_db drop "$DB"
odoo -d "$DB" -i compute_bridge --stop-after-init || exit 1

echo "==> Odoo: the addon's tests with pytest-odoo (real Odoo, real HTTP server, real services)"
# odoo18_http_once: one HTTP server for the session (see tools/pytest_plugins)
PYTHONPATH=$REPO/tools/pytest_plugins:$PYTHONPATH "$PY" -m pytest -p no:pytest_nameko \
    -p no:cacheprovider -p odoo18_http_once --odoo-config "$CONF" --odoo-database "$DB" \
    --odoo-http compute_bridge/tests 2>&1 | tee "$RUN_DIR/pytest-odoo.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && rc=1

echo "==> Odoo: the same tests through Odoo's own runner (--test-enable -i compute_bridge)"
odoo_db drop "${DB}_runner"
odoo -d "${DB}_runner" -i compute_bridge --test-enable --test-tags /compute_bridge \
    --stop-after-init --log-level=test 2>&1 | tee "$RUN_DIR/odoo-runner.log"
run_rc=${PIPESTATUS[0]}
# Odoo's runner exits 0 even when tests fail; its log says "N failed, N error(s) of N tests".
# Match that summary only: a log line such as "operation 1 failed: ..." is not a test failure.
summary=$(grep -E 'compute_bridge: [0-9]+ tests|[0-9]+ failed, [0-9]+ error\(s\) of [0-9]+ tests|Ran [0-9]+ tests' "$RUN_DIR/odoo-runner.log" | tail -1)
echo "odoo runner: ${summary#*odoo.tests.result: }" | tee "$RUN_DIR/odoo-runner-summary.txt"
if [ "$run_rc" -ne 0 ] || grep -qE '(ERROR|CRITICAL) .*(FAIL|ERROR):|[1-9][0-9]* failed, [0-9]+ error|[0-9]+ failed, [1-9][0-9]* error\(s\)' "$RUN_DIR/odoo-runner.log"; then
    echo "Odoo's runner reported failures" >&2
    rc=1
fi

echo "==> Odoo: uninstalling compute_bridge from ${DB}_runner"
odoo_db uninstall "${DB}_runner" compute_bridge | tee "$RUN_DIR/odoo-uninstall.txt"
[ "${PIPESTATUS[0]}" -ne 0 ] && rc=1
odoo_db drop "${DB}_runner"
exit $rc
