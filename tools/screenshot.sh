#!/usr/bin/env bash
# Retake compute_bridge/static/description/screenshot_form.png: the tour of
# compute_bridge/tests/test_tour.py (headless Chromium types 99999 + 99999, presses Suma, sees
# 199998) saves its last page there. Needs what `make test` needs: the broker, PostgreSQL and
# Odoo's source; starts the Nameko services for the run and stops them after. Look at the new
# PNG before committing it.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${VENV:-$REPO/.venv}/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR
DB=${COMPUTE_BRIDGE_SCREENSHOT_DB:-cb_screenshot}
HTTP_PORT=${COMPUTE_BRIDGE_SCREENSHOT_HTTP_PORT:-18479}
mkdir -p "$RUN_DIR"

ODOO_SRC=$(python3 tools/stack.py odoo-src)
[ -n "$ODOO_SRC" ] || { echo "no Odoo 18.0 source (see tools/stack.py)" >&2; exit 1; }
python3 tools/stack.py up broker postgres || exit 1
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"
SERVICES_PID=""
cleanup() {
    if [ -n "$SERVICES_PID" ]; then  # as tools/test.sh: SIGINT, then SIGKILL after 10 s
        kill -INT "$SERVICES_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVICES_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$SERVICES_PID" 2>/dev/null
    fi
    python3 tools/stack.py down
}
trap cleanup EXIT

"${VENV:-$REPO/.venv}/bin/nameko" run --broker "$AMQP_URI" services > "$RUN_DIR/screenshot-services.log" 2>&1 &
SERVICES_PID=$!
"$PY" tools/wait_services.py "$AMQP_URI" || exit 1

export PYTHONPATH=$ODOO_SRC${PYTHONPATH:+:$PYTHONPATH} AMQP_URI
CONF=$RUN_DIR/odoo-screenshot.conf
python3 tools/stack.py odoo-conf "$CONF" --http-port "$HTTP_PORT"
# A fresh database each time, so the screenshot shows one new operation and no leftovers.
# Odoo's own runner installs the addon and runs just the tour, with its HTTP server up.
psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -qc "DROP DATABASE IF EXISTS $DB" || exit 1
COMPUTE_BRIDGE_SCREENSHOT_DIR=$REPO/compute_bridge/static/description \
    "$PY" -m odoo -c "$CONF" -d "$DB" -i compute_bridge --test-enable \
    --test-tags /compute_bridge:TestTour --stop-after-init --log-level=test \
    > "$RUN_DIR/screenshot-odoo.log" 2>&1
rc=$?
psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -qc "DROP DATABASE IF EXISTS $DB"
# the runner exits 0 even when a test fails: its log says so
if [ $rc -ne 0 ] || ! grep -q "0 failed, 0 error(s) of 1 tests" "$RUN_DIR/screenshot-odoo.log"; then
    grep -E "FAIL|ERROR" "$RUN_DIR/screenshot-odoo.log" | tail -20
    echo "the tour failed: see $RUN_DIR/screenshot-odoo.log" >&2
    exit 1
fi
ls -l compute_bridge/static/description/screenshot_form.png
