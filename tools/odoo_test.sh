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

cat > "$CONF" <<CONF
[options]
addons_path = $REPO
data_dir = $RUN_DIR/odoo-data
db_host = $PGHOST
db_port = $PGPORT
db_user = $PGUSER
db_password = ${PGPASSWORD:-False}
http_port = $HTTP_PORT
http_interface = 127.0.0.1
gevent_port = $((HTTP_PORT + 1))
list_db = False
without_demo = all
log_level = warn
CONF

odoo() { "$PY" -m odoo -c "$CONF" "$@"; }
dropdb_if() { "$PY" - "$1" <<'PYEOF'
import sys, odoo
from odoo.tools import config
config.parse_config(["-c", __import__("os").environ["CONF"]])
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
"$PY" -m pytest -p no:pytest_nameko -p no:cacheprovider \
    --odoo-config "$CONF" --odoo-database "$DB" --odoo-http \
    compute_bridge/tests 2>&1 | tee "$RUN_DIR/pytest-odoo.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && rc=1

echo "==> Odoo: the same tests through Odoo's own runner (--test-enable -i compute_bridge)"
dropdb_if "${DB}_runner"
odoo -d "${DB}_runner" -i compute_bridge --test-enable --test-tags /compute_bridge \
    --stop-after-init --log-level=test 2>&1 | tee "$RUN_DIR/odoo-runner.log"
run_rc=${PIPESTATUS[0]}
# Odoo's runner exits 0 even when tests fail; its log says "N failed, N error(s) of N tests".
summary=$(grep -E 'compute_bridge: [0-9]+ tests|[0-9]+ failed, [0-9]+ error\(s\) of [0-9]+ tests|Ran [0-9]+ tests' "$RUN_DIR/odoo-runner.log" | tail -1)
echo "odoo runner: ${summary:-no summary}" > "$RUN_DIR/odoo-runner-summary.txt"
if [ "$run_rc" -ne 0 ] || grep -qE '(ERROR|CRITICAL) .*(FAIL|ERROR):|[1-9][0-9]* failed|[1-9][0-9]* error\(s\)' "$RUN_DIR/odoo-runner.log"; then
    echo "Odoo's runner reported failures" >&2
    rc=1
fi
dropdb_if "${DB}_runner"
exit $rc
