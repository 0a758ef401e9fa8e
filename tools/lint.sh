#!/usr/bin/env bash
# Static checks; exits non-zero on any blocking finding. tools/test.sh runs it as the "lint" layer
# (`make lint`).
#
#   1. ruff over the whole repository (ruff.toml)
#   2. pylint-odoo over the addon with OCA's mandatory checks (.pylintrc-mandatory)
#   3. OCA's XML / CSV and .po checks for the addon (oca-checks-odoo-module, oca-checks-po)
#   4. Odoo 17/18 view syntax: <list>, invisible="..."; never <tree>, attrs= or states=
#   5. pylint's error checks (-E) over the Nameko services and the tools
#   6. pylint-odoo's optional checks (.pylintrc): printed, never blocking
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
BIN=${VENV:-$REPO/.venv}/bin
ADDON=compute_bridge

for tool in ruff pylint oca-checks-odoo-module oca-checks-po; do
    [ -x "$BIN/$tool" ] || { echo "lint: $BIN/$tool missing; run 'make venv'" >&2; exit 2; }
done

FAILED=()
step() {  # step <name> <command...>: run, remember a failure, keep going
    local name=$1
    shift
    printf -- '--- %s\n' "$name"
    "$@" || FAILED+=("$name")
}

old_view_syntax() {  # succeeds when no XML file uses what Odoo 17 removed and 18 renamed
    ! grep -rnE --include='*.xml' '<tree[[:space:]>/]|[[:space:]](attrs|states)=' "$1"
}

step "ruff" "$BIN/ruff" check --no-fix --output-format=concise .

if [ -f "$ADDON/__manifest__.py" ]; then
    step "pylint-odoo (mandatory)" "$BIN/pylint" --rcfile=.pylintrc-mandatory "$ADDON"
    step "oca-checks-odoo-module" "$BIN/oca-checks-odoo-module" "$ADDON"
    step "Odoo 18 views (no <tree>, attrs=, states=)" old_view_syntax "$ADDON"
    mapfile -t po_files < <(find "$ADDON" -name '*.po' -o -name '*.pot' | sort)
    if [ ${#po_files[@]} -gt 0 ]; then
        step "oca-checks-po" "$BIN/oca-checks-po" "${po_files[@]}"
    fi
else
    echo "lint: $ADDON/__manifest__.py not found: the addon checks were not run" >&2
    FAILED+=("addon missing")
fi

mapfile -t plain < <(ls -d services tools/*.py tools/harness tools/pytest_plugins/*.py \
    benchmarks/*.py 2>/dev/null)
# odoo is not installed in the venv (its source goes on PYTHONPATH when a script runs)
step "pylint -E (services, tools)" "$BIN/pylint" -E --score=n --ignored-modules=odoo "${plain[@]}"

if [ -f "$ADDON/__manifest__.py" ]; then
    printf -- '--- %s\n' "pylint-odoo (optional checks, not blocking)"
    "$BIN/pylint" --rcfile=.pylintrc --exit-zero "$ADDON"
fi

if [ ${#FAILED[@]} -gt 0 ]; then
    printf 'lint: FAILED: %s\n' "$(IFS=,; echo "${FAILED[*]}")"
    exit 1
fi
echo "lint: clean"
