#!/usr/bin/env bash
# `make bench`: benchmarks/run.py against real parts, measured side by side in one run.
#
#   tools/bench.sh [--quick] [--phases 1,2,3,5,6,7,8,4] [--fresh-db]
#
# Like `make test`, it starts what is not reachable (RabbitMQ, PostgreSQL: tools/harness) and
# stops it on exit; benchmarks/run.py starts and stops the Nameko services and an Odoo server
# itself, in a RabbitMQ virtual host of its own. Output also goes to benchmarks/results/latest.txt.
# Settings (environment): BENCH_DB (cb_bench), BENCH_ODOO_PORT (8269), BENCH_VHOST,
# BENCH_SERVICES_ROOT (where `nameko run services` runs; default the repository), BENCH_<SIZE>,
# BENCH_CLUSTER_ODOO_PORT (8279) and COMPUTE_BRIDGE_CLUSTER_AMQP_PORTS (phase 8's cluster).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR

# The cleanup must finish even when signalled again (make forwards SIGTERM to its child).
trap 'trap "" INT TERM HUP; python3 tools/stack.py down' EXIT
ODOO_SRC=$(python3 tools/stack.py odoo-src)
parts=(broker)
[ -n "$ODOO_SRC" ] && parts+=(postgres)
python3 tools/stack.py up "${parts[@]}" || exit 1
set -a
# shellcheck disable=SC1091
source "$RUN_DIR/stack.env"
set +a
export ODOO_SRC
"${VENV:-$REPO/.venv}/bin/python" benchmarks/run.py "$@"
