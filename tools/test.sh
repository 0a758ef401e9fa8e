#!/usr/bin/env bash
# Runs the test layers against real parts: RabbitMQ, PostgreSQL, `nameko run` processes, Odoo.
#
#   tools/test.sh all | services | odoo | faults | lint   (several may be given)
#
# What is not reachable is started here (tools/harness) and stopped on exit. The Nameko layers
# and the Odoo layers run as separate pytest processes: nameko's tests need eventlet
# monkey-patching, which Odoo must never get, and pytest-odoo imports odoo as soon as it loads.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
VENV=${VENV:-$REPO/.venv}
PY=$VENV/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
export COMPUTE_BRIDGE_RUN_DIR=$RUN_DIR
mkdir -p "$RUN_DIR"

layers=("$@")
[ ${#layers[@]} -eq 0 ] && layers=(all)
if [ "${layers[*]}" = all ]; then layers=(lint services odoo faults); fi

declare -a SUMMARY=()
FAILED=0

note() { printf '\n==> %s\n' "$*"; }

# The cleanup must finish even when signalled again (make forwards SIGTERM to its child).
cleanup() {
    trap '' INT TERM HUP
    python3 tools/stack.py down
}

# ---------------------------------------------------------------------------------------------
start_stack() {
    python3 tools/stack.py up "$@" || exit 1
    # shellcheck disable=SC1091
    source "$RUN_DIR/stack.env"
}

record() {  # record <layer> <exit code> <pytest log>
    local line
    line=$(grep -E '^=+ .*(passed|failed|skipped|error|no tests ran).* =+$' "$3" | tail -1 | tr -d '=' | sed 's/^ *//')
    [ -z "$line" ] && line="exit code $2"
    SUMMARY+=("$1: $line")
    # The failures by name, so that the summary alone (all a CI log's tail may keep) says which.
    local failure
    while IFS= read -r failure; do
        SUMMARY+=("    $failure")
    done < <(grep -E '^(FAILED|ERROR) ' "$3" | cut -c1-200)
    # pytest's 5 means "no test collected": a layer that should have tests and has none is a failure.
    [ "$2" -ne 0 ] && FAILED=1
}

# ---------------------------------------------------------------------------------------------
layer_lint() {
    if [ -x tools/lint.sh ]; then
        note "lint"
        tools/lint.sh 2>&1 | tee "$RUN_DIR/lint.log"
        local rc=${PIPESTATUS[0]}
        if [ "$rc" -eq 0 ]; then SUMMARY+=("lint: clean"); else SUMMARY+=("lint: FAILED"); FAILED=1; fi
    fi
}

layer_services() {
    start_stack broker
    note "Nameko layers: unit, service, integration (pytest patched by tests/conftest.py, no Odoo)"
    "$PY" -m pytest -p no:odoo -p no:cacheprovider --durations=10 \
        --amqp-uri "$AMQP_URI" --rabbit-api-uri "$RABBIT_API_URI" \
        tests/unit tests/service tests/integration 2>&1 | tee "$RUN_DIR/pytest-services.log"
    record "services (unit, service, integration)" "${PIPESTATUS[0]}" "$RUN_DIR/pytest-services.log"
}

# The Odoo source, looked up (and downloaded where allowed) once for every layer that needs it.
odoo_src() {
    if [ -z "${ODOO_SRC_LOOKED_UP:-}" ]; then
        ODOO_SRC=$(python3 tools/stack.py odoo-src)
        ODOO_SRC_LOOKED_UP=1
        [ -n "$ODOO_SRC" ] && export ODOO_SRC
    fi
    [ -n "$ODOO_SRC" ]
}

layer_odoo() {
    if ! odoo_src; then
        echo
        echo "!!!!!!!! SKIPPED: Odoo tests — no Odoo 18.0 source at \$ODOO_SRC, in" \
             "${XDG_CACHE_HOME:-$HOME/.cache}/compute_bridge/odoo-18.0, nor downloadable. !!!!!!!!"
        SUMMARY+=("odoo: SKIPPED (no Odoo 18.0 source; see the line above)")
        return
    fi
    start_stack broker postgres
    # No HEARTBEAT_URL here: beats arriving while Odoo's runner installs the module wait on the
    # registry lock, and HttpCase then waits for those requests forever. Real services beating
    # into a real Odoo server are tested in the faults layer (test_heartbeats_demand_the_secret).
    unset HEARTBEAT_URL
    # The blog post's `nameko run --broker $AMQP_URI services` runs while the Odoo tests do.
    "$PY" -m tools.harness with-services tools/odoo_test.sh
    local rc=$?
    for log in "$RUN_DIR"/pytest-odoo*.log; do
        [ -f "$log" ] && record "odoo ($(basename "$log" .log))" 0 "$log"
    done
    for extra in odoo-runner-summary.txt odoo-uninstall.txt; do
        [ -s "$RUN_DIR/$extra" ] && SUMMARY+=("odoo: $(tail -1 "$RUN_DIR/$extra")")
    done
    [ "$rc" -ne 0 ] && { SUMMARY+=("odoo: FAILED (exit $rc)"); FAILED=1; }
}

layer_faults() {
    # Fault tests (tests/faults): their own RabbitMQ node (ports 5692/15692, stopped and restarted
    # by the tests), `nameko run` processes and an Odoo server on database cb_faults. Their own
    # pytest process and config: never under tests/conftest.py's eventlet patching.
    if ! odoo_src; then
        echo
        echo "!!!!!!!! SKIPPED: the Odoo fault tests — no Odoo 18.0 source (see the odoo layer);" \
             "only the broker and service fault tests run. !!!!!!!!"
        SUMMARY+=("faults: Odoo parts SKIPPED (no Odoo 18.0 source)")
    fi
    start_stack postgres
    note "fault tests: broker down/restarted, no consumer, SIGKILL mid-batch, concurrency, hostile input, security"
    "$PY" -m pytest -c tests/faults/pytest-faults.ini --confcutdir=tests/faults \
        -p no:pytest_nameko -p no:odoo -p no:cacheprovider --durations=10 \
        tests/faults 2>&1 | tee "$RUN_DIR/pytest-faults.log"
    record "faults" "${PIPESTATUS[0]}" "$RUN_DIR/pytest-faults.log"
}

trap cleanup EXIT
rm -f "$RUN_DIR"/pytest-*.log "$RUN_DIR"/odoo-runner-summary.txt "$RUN_DIR"/odoo-uninstall.txt
# docker-compose, msgfmt, chromium: installed when root and missing; tests skip loudly without.
python3 tools/stack.py ensure-tools
for layer in "${layers[@]}"; do
    case "$layer" in
        lint) layer_lint ;;
        services) layer_services ;;
        odoo) layer_odoo ;;
        faults) layer_faults ;;
        *) echo "unknown layer: $layer" >&2; exit 2 ;;
    esac
done

printf '\n==================== compute_bridge test summary ====================\n'
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
