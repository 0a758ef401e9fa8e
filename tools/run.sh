#!/usr/bin/env bash
# `make run`: PostgreSQL, RabbitMQ, the Nameko services and Odoo with compute_bridge installed on a
# ready database, in the foreground; Ctrl-C or SIGTERM stops everything it started.
# The work is done by tools/harness/run.py (settings: see there).
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" && exec "${VENV:-$REPO/.venv}/bin/python" -m tools.harness run
