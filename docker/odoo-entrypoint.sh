#!/bin/sh
# compute_bridge's Odoo container (docker/odoo.Dockerfile).
#
#   odoo-entrypoint.sh [odoo] [ARGS...]   the Odoo server; it never installs or upgrades modules
#   odoo-entrypoint.sh init               install compute_bridge if the database does not have it
#   odoo-entrypoint.sh upgrade            update compute_bridge (run before rolling out an image)
#   odoo-entrypoint.sh COMMAND...         any other command (a shell, pg_dump...)
#
# Secrets come from the environment or, for Docker secrets, from files named by NAME_FILE:
#   ODOO_ADMIN_PASSWD   the master password (database manager; closed by list_db = False anyway)
#   ODOO_ADMIN_USER_PASSWORD   init only: the password the init step gives the admin user while
#                       that user still has the password "admin"; not needed once it is changed
#   PGPASSWORD          the database role's password, read by libpq, never on a command line
#   COMPUTE_BRIDGE_BROKER_URL, COMPUTE_BRIDGE_HEARTBEAT_SECRET   read by the addon
# PGHOST, PGPORT, PGUSER and PGDATABASE name the database; Odoo serves that one database only.
set -eu

ODOO_RC=${ODOO_RC:-/etc/odoo/odoo.conf}
# The running configuration holds admin_passwd: only this user may read it.
ODOO_RUNTIME_RC=${ODOO_RUNTIME_RC:-/tmp/odoo/odoo.conf}
MODULE=compute_bridge
# One-shot steps run one process with no HTTP server and no cron thread.
ONE_SHOT_OPTIONS="--workers=0 --max-cron-threads=0 --no-http --stop-after-init"

# The addon in this image, whose version the database must have (the upgrade step makes it so).
MANIFEST=${COMPUTE_BRIDGE_MANIFEST:-/opt/compute_bridge/addons/$MODULE/__manifest__.py}
UPGRADE_COMMAND="docker compose run --rm odoo-upgrade"

# shellcheck source=docker/entrypoint-lib.sh
. "$(dirname "$0")/entrypoint-lib.sh"
log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') INFO odoo-entrypoint: $*" >&2; }

for name in ODOO_ADMIN_PASSWD ODOO_ADMIN_USER_PASSWORD PGPASSWORD COMPUTE_BRIDGE_BROKER_URL \
        COMPUTE_BRIDGE_HEARTBEAT_SECRET; do
    file_env "$name"
done
check_broker_url COMPUTE_BRIDGE_BROKER_URL

case "${1:-odoo}" in
    odoo | init | upgrade | -*) ;;
    *) exec "$@" ;;
esac

[ -n "${ODOO_ADMIN_PASSWD:-}" ] || die "ODOO_ADMIN_PASSWD (or ODOO_ADMIN_PASSWD_FILE) is not set"
[ -n "${PGDATABASE:-}" ] || die "PGDATABASE (the database Odoo serves) is not set"
if grep -Eq '^[[:space:]]*admin_passwd[[:space:]]*=' "$ODOO_RC"; then
    die "$ODOO_RC sets admin_passwd: it must come from ODOO_ADMIN_PASSWD, not from the image"
fi
mkdir -p "$(dirname "$ODOO_RUNTIME_RC")"
(
    umask 077
    cat "$ODOO_RC"
    printf '\nadmin_passwd = %s\n' "$ODOO_ADMIN_PASSWD"
) > "$ODOO_RUNTIME_RC.new"
chmod 600 "$ODOO_RUNTIME_RC.new"
mv "$ODOO_RUNTIME_RC.new" "$ODOO_RUNTIME_RC"
unset ODOO_ADMIN_PASSWD
[ "${1:-}" = init ] || unset ODOO_ADMIN_USER_PASSWORD

# COLUMN of the module's row in PGDATABASE; empty when Odoo never initialised it
module_field() {
    initialised=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT to_regclass('public.ir_module_module') IS NOT NULL")
    if [ "$initialised" = t ]; then
        psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT $1 FROM ir_module_module WHERE name = '$MODULE'"
    fi
}

manifest_version() {
    python3 -c 'import ast, sys; print(ast.literal_eval(open(sys.argv[1]).read())["version"])' \
        "$MANIFEST"
}

# The admin user logs in with "admin" until this step gives them ODOO_ADMIN_USER_PASSWORD. Run on
# every init, so that a step that failed after the install is repaired by the next one; the
# stored hash is checked with Odoo's own crypt context, and a password the administrator chose is
# never overwritten.
set_admin_password() {
    # Odoo's shell runs the script it reads on stdin; the password stays in the environment.
    odoo shell --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --no-http "$@" <<'PYEOF'
import os
import sys

admin = env.ref("base.user_admin", raise_if_not_found=False)
if admin:
    env.cr.execute("SELECT COALESCE(password, '') FROM res_users WHERE id = %s", [admin.id])
    [stored] = env.cr.fetchone()
    if env["res.users"]._crypt_context().verify("admin", stored):
        new_password = os.environ.get("ODOO_ADMIN_USER_PASSWORD")
        if not new_password:
            sys.exit("odoo-entrypoint: the admin user still has the password \"admin\": set "
                     "ODOO_ADMIN_USER_PASSWORD (or ODOO_ADMIN_USER_PASSWORD_FILE) and run init again")
        admin.password = new_password
        env.cr.commit()
        print("odoo-entrypoint: the admin user's password is now ODOO_ADMIN_USER_PASSWORD",
              file=sys.stderr)
PYEOF
}

case "${1:-odoo}" in
    init)
        shift
        state=$(module_field state) || die "cannot query database $PGDATABASE"
        case "$state" in
            "" | uninstalled)
                # a new install gives the admin user the password "admin": refuse before it
                [ -n "${ODOO_ADMIN_USER_PASSWORD:-}" ] ||
                    die "ODOO_ADMIN_USER_PASSWORD (or ODOO_ADMIN_USER_PASSWORD_FILE) is not set"
                log "installing $MODULE in $PGDATABASE"
                # shellcheck disable=SC2086
                odoo --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --db-filter "^${PGDATABASE}\$" \
                    $ONE_SHOT_OPTIONS --init "$MODULE" "$@"
                ;;
            installed)
                # -i on an installed module reloads its data in init mode (records marked
                # noupdate are rewritten): an installed module is only ever updated, by the
                # upgrade step.
                log "$MODULE is already installed in $PGDATABASE: not installing it again" ;;
            *)
                die "$MODULE is in state '$state' in $PGDATABASE (an install or upgrade was interrupted): run $UPGRADE_COMMAND" ;;
        esac
        set_admin_password "$@"
        exit 0
        ;;
    upgrade)
        shift
        log "updating $MODULE in $PGDATABASE"
        # shellcheck disable=SC2086
        set -- $ONE_SHOT_OPTIONS --update "$MODULE" "$@"
        ;;
    *)
        if [ "${1:-}" = odoo ]; then shift; fi
        installed=$(module_field "latest_version || '|' || state") ||
            die "cannot query database $PGDATABASE"
        if [ "${installed#*|}" = installed ]; then
            shipped=$(manifest_version) || die "cannot read the version in $MANIFEST"
            [ "${installed%|*}" = "$shipped" ] ||
                die "$PGDATABASE has $MODULE ${installed%|*}, this image has $shipped: run $UPGRADE_COMMAND"
        fi
        for arg in "$@"; do
            case "$arg" in
                -i | -i* | --init | --init=* | -u | -u* | --update | --update=*)
                    die "the server does not install or update modules ($arg): use the init or upgrade step" ;;
            esac
        done
        ;;
esac
exec odoo --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --db-filter "^${PGDATABASE}\$" "$@"
