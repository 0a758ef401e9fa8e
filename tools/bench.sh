#!/usr/bin/env bash
# `make bench`: benchmarks/run.py against real parts, measured side by side in one run.
#
#   tools/bench.sh [--quick] [--phases 1,2,3,5,4] [--fresh-db]
#
# Like `make test`, it starts what is not reachable (RabbitMQ, PostgreSQL: tools/stack.py) and
# stops it on exit; benchmarks/run.py starts and stops the Nameko services and an Odoo server
# itself, in a RabbitMQ virtual host of its own. Output also goes to benchmarks/results/latest.txt.
# Settings (environment): BENCH_DB (cb_bench), BENCH_ODOO_PORT (8269), BENCH_VHOST,
# BENCH_SERVICES_ROOT (where `nameko run services` runs; default the repository).
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
VENV=${VENV:-$REPO/.venv}
PY=$VENV/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR
mkdir -p "$RUN_DIR/bench"

# run.py stops the services and the Odoo server it started, on Ctrl-C and on SIGTERM too.
trap 'python3 tools/stack.py down' EXIT

ODOO_SRC=$(python3 tools/stack.py odoo-src)
parts=(broker)
[ -n "$ODOO_SRC" ] && parts+=(postgres)
python3 tools/stack.py up "${parts[@]}" || { echo "could not bring up: ${parts[*]}" >&2; exit 1; }
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"
export AMQP_URI RABBIT_API_URI ODOO_SRC
export PGHOST=${PGHOST:-} PGPORT=${PGPORT:-} PGUSER=${PGUSER:-} PGPASSWORD=${PGPASSWORD:-}

"$PY" benchmarks/run.py "$@"
