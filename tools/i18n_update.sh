#!/usr/bin/env bash
# Refresh the addon's translation template and merge it into the translations:
#
#   1. a scratch database (COMPUTE_BRIDGE_I18N_DB, default cb_i18n) with compute_bridge installed,
#      or updated when it already is (--fresh drops and recreates it);
#   2. compute_bridge/i18n/compute_bridge.pot exported with Odoo's own exporter
#      (`odoo --i18n-export=<file>.pot --modules=compute_bridge` with no --language: a template);
#   3. every compute_bridge/i18n/*.po merged with the template (msgmerge --no-fuzzy-matching, so
#      new strings appear as empty msgstr entries, never as guessed fuzzy ones), strings gone
#      from the code dropped, the file written as Odoo writes it (sorted, wrapped at 78);
#   4. a summary per language: entries, untranslated, fuzzy; exit 1 if any are left to translate.
#
# Settings (environment): ODOO_SRC (Odoo 18.0 source; default: tools/stack.py odoo-src),
# PGHOST / PGPORT / PGUSER / PGPASSWORD (default: .run/stack.env, else 127.0.0.1:5439 odoo).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PY=${VENV:-$REPO/.venv}/bin/python
RUN_DIR=${COMPUTE_BRIDGE_RUN_DIR:-$REPO/.run}
DB=${COMPUTE_BRIDGE_I18N_DB:-cb_i18n}
MODULE=compute_bridge
I18N_DIR=$MODULE/i18n
POT=$I18N_DIR/$MODULE.pot
FRESH=0
[ "${1:-}" = "--fresh" ] && FRESH=1

for tool in msgmerge msgfmt; do
    command -v "$tool" >/dev/null || { echo "i18n: $tool missing (apt-get install gettext)" >&2; exit 2; }
done
if [ -z "${PGHOST:-}" ] && [ -f "$RUN_DIR/stack.env" ]; then
    # shellcheck disable=SC1091
    . "$RUN_DIR/stack.env"
fi
: "${PGHOST:=127.0.0.1}" "${PGPORT:=5439}" "${PGUSER:=odoo}"
ODOO_SRC=${ODOO_SRC:-$(python3 tools/stack.py odoo-src 2>/dev/null || true)}
ODOO_SRC=${ODOO_SRC:-${XDG_CACHE_HOME:-$HOME/.cache}/compute_bridge/odoo-18.0}
[ -d "$ODOO_SRC/odoo" ] || { echo "i18n: no Odoo 18.0 source at $ODOO_SRC" >&2; exit 2; }
export ODOO_SRC PYTHONPATH=$ODOO_SRC${PYTHONPATH:+:$PYTHONPATH}

mkdir -p "$RUN_DIR" "$I18N_DIR"
CONF=$RUN_DIR/odoo-i18n.conf
python3 tools/stack.py odoo-conf "$CONF" --set list_db=True
odoo() { "$PY" "$(python3 tools/stack.py odoo-launcher)" -c "$CONF" "$@"; }
odoo_db() { "$PY" tools/odoo_db.py -c "$CONF" "$@"; }
drop_db() { odoo_db drop "$DB"; }
# "installed", "absent" (no database), "empty" or the module's state in an existing database.
module_state() { odoo_db module-state "$DB" "$MODULE"; }

[ "$FRESH" = 1 ] && drop_db
state=$(module_state)
if [ "$state" = installed ]; then
    echo "==> i18n: updating $MODULE in $DB"
    odoo -d "$DB" -u "$MODULE" --stop-after-init
else
    [ "$state" = absent ] || drop_db  # half-made database: start again
    echo "==> i18n: creating $DB with $MODULE installed"
    odoo -d "$DB" -i "$MODULE" --stop-after-init
fi

echo "==> i18n: exporting $POT"
NEW_POT=$RUN_DIR/$MODULE.pot
odoo -d "$DB" --i18n-export="$NEW_POT" --modules="$MODULE"
msgfmt -o /dev/null "$NEW_POT"  # a template: no Language header, so no -c
# Keep the file as it is when only its dates changed: no commit that is a timestamp.
undated() { grep -vE '^"(POT-Creation|PO-Revision)-Date: ' "$1"; }
if [ -f "$POT" ] && diff -q <(undated "$POT") <(undated "$NEW_POT") >/dev/null; then
    echo "    $POT: no change"
    rm -f "$NEW_POT"
else
    mv "$NEW_POT" "$POT"
fi

status=0
shopt -s nullglob
for po in "$I18N_DIR"/*.po; do
    echo "==> i18n: merging $POT into $po"
    msgmerge --quiet --update --backup=none --no-fuzzy-matching "$po" "$POT"
    # obsolete entries dropped, sorted as Odoo writes it, what is left to translate listed
    "$PY" tools/po_tidy.py "$po" || status=1
    msgfmt -c -o /dev/null "$po"
done
exit $status
