#!/usr/bin/env bash
# `make run`: PostgreSQL, RabbitMQ, the Nameko services and Odoo with compute_bridge installed on
# a ready database, in the foreground. Ctrl-C stops everything this script started.
#
# Settings (environment): AMQP_URI, PGHOST/PGPORT (see tools/stack.py), ODOO_HTTP_PORT (8069),
# COMPUTE_BRIDGE_DB (compute_bridge), HEARTBEAT_INTERVAL (30).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
VENV=${VENV:-$REPO/.venv}
PY=$VENV/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR
DB=${COMPUTE_BRIDGE_DB:-compute_bridge}
HTTP_PORT=${ODOO_HTTP_PORT:-8069}
mkdir -p "$RUN_DIR"

PIDS=()
stopping=0
stop_all() {
    [ "$stopping" = 1 ] && return
    stopping=1
    echo
    echo "==> stopping"
    # SIGTERM, not SIGINT: a job a script starts in the background ignores SIGINT. Odoo and
    # `nameko run` both stop gracefully on SIGTERM.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
    done
    python3 tools/stack.py down
}
trap stop_all EXIT
trap 'exit 130' INT TERM

ODOO_SRC=$(python3 tools/stack.py odoo-src)
parts=(broker)
[ -n "$ODOO_SRC" ] && parts+=(postgres)
python3 tools/stack.py up "${parts[@]}" || exit 1
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"

# One secret shared by the services (which POST heartbeats) and Odoo (which checks them).
SECRET_FILE=$RUN_DIR/heartbeat_secret
[ -s "$SECRET_FILE" ] || "$PY" -c 'import secrets; print(secrets.token_urlsafe(24))' > "$SECRET_FILE"
HEARTBEAT_SECRET=$(cat "$SECRET_FILE")
export HEARTBEAT_SECRET COMPUTE_BRIDGE_HEARTBEAT_SECRET=$HEARTBEAT_SECRET

echo "==> starting the Nameko services: nameko run --broker <AMQP_URI> services"
if [ -n "$ODOO_SRC" ]; then
    export HEARTBEAT_URL=${HEARTBEAT_URL:-http://127.0.0.1:$HTTP_PORT/compute_bridge/heartbeat}
fi
# The prefix goes through a process substitution so that $! is nameko itself, not sed.
"$VENV/bin/nameko" run --broker "$AMQP_URI" services > >(sed -u 's/^/[services] /') 2>&1 &
PIDS+=($!)
"$PY" tools/wait_services.py "$AMQP_URI" || exit 1

if [ -z "$ODOO_SRC" ]; then
    echo "!!!!!!!! No Odoo 18.0 source found (\$ODOO_SRC, ${XDG_CACHE_HOME:-$HOME/.cache}/compute_bridge/odoo-18.0):"
    echo "!!!!!!!! running RabbitMQ and the services only."
    echo "Try: .venv/bin/nameko shell --broker pyamqp://guest:guest@localhost   then   n.rpc.compute.method(99999, 99999)"
    wait
    exit 0
fi

export PYTHONPATH=$ODOO_SRC${PYTHONPATH:+:$PYTHONPATH}
export COMPUTE_BRIDGE_BROKER_URL=$AMQP_URI
CONF=$RUN_DIR/odoo-run.conf
python3 tools/stack.py odoo-conf "$CONF" --http-port "$HTTP_PORT" --set http_interface= \
    --set gevent_port=$((HTTP_PORT + 3)) --set db_name="$DB" --set log_level=info

if ! psql -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    echo "==> creating database $DB with compute_bridge installed (about a minute)"
    "$PY" -m odoo -c "$CONF" -d "$DB" -i compute_bridge --stop-after-init --log-level=warn || exit 1
    update=()
else
    update=(-u compute_bridge)  # pick up changes to the addon since the last run
fi

cat <<EOF

================================================================================
 compute_bridge is starting at http://localhost:$HTTP_PORT
 Log in as admin / admin, open Compute Bridge > Operations, create a record with
 99999 and 99999 and press "Suma": the result is 199998.
 RabbitMQ management UI: http://localhost:15672 (its guest user works from localhost)
 Ctrl-C stops Odoo, the services, and what this command started.
================================================================================

EOF
"$PY" -m odoo -c "$CONF" "${update[@]}" 2>&1 &
PIDS+=($!)
wait
