#!/usr/bin/env bash
# Retake compute_bridge/static/description/screenshot_form.png: the tour of
# compute_bridge/tests/test_tour.py (headless Chromium types 99999 + 99999, presses Suma, sees
# 199998) saves its last page there. Needs what `make test` needs: the broker, PostgreSQL and
# Odoo's source; the Nameko services run for the tour only. Look at the new PNG before committing.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${VENV:-$REPO/.venv}/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR
DB=${COMPUTE_BRIDGE_SCREENSHOT_DB:-cb_screenshot}
HTTP_PORT=${COMPUTE_BRIDGE_SCREENSHOT_HTTP_PORT:-18479}
LOG=$RUN_DIR/screenshot-odoo.log

ODOO_SRC=$(python3 tools/stack.py odoo-src)
[ -n "$ODOO_SRC" ] || { echo "no Odoo 18.0 source (see tools/harness/odoo_server.py)" >&2; exit 1; }
trap 'trap "" INT TERM HUP; python3 tools/stack.py down' EXIT
python3 tools/stack.py up broker postgres || exit 1
set -a
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"
set +a
export ODOO_SRC PYTHONPATH=$ODOO_SRC${PYTHONPATH:+:$PYTHONPATH}
CONF=$RUN_DIR/odoo-screenshot.conf
python3 tools/stack.py odoo-conf "$CONF" --http-port "$HTTP_PORT"

# A fresh database each time, so the screenshot shows one new operation and no leftovers.
# Odoo's own runner installs the addon and runs just the tour, with its HTTP server up.
"$PY" tools/odoo_db.py -c "$CONF" drop "$DB" || exit 1
COMPUTE_BRIDGE_SCREENSHOT_DIR=$REPO/compute_bridge/static/description \
    "$PY" -m tools.harness with-services "$PY" "$(python3 tools/stack.py odoo-launcher)" \
    -c "$CONF" -d "$DB" -i compute_bridge --test-enable --test-tags /compute_bridge:TestTour \
    --stop-after-init --log-level=test > "$LOG" 2>&1
rc=$?
"$PY" tools/odoo_db.py -c "$CONF" drop "$DB"
# the runner exits 0 even when a test fails: its log says so
if [ $rc -ne 0 ] || ! grep -q "0 failed, 0 error(s) of 1 tests" "$LOG"; then
    grep -E "FAIL|ERROR" "$LOG" | tail -20
    echo "the tour failed: see $LOG" >&2
    exit 1
fi
ls -l compute_bridge/static/description/screenshot_form.png
