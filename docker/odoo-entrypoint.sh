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
#   ODOO_ADMIN_USER_PASSWORD   init only: the password the init step gives the admin user, who
#                       would otherwise log in with "admin"
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

log() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') INFO odoo-entrypoint: $*" >&2; }
die() { echo "$(date -u '+%Y-%m-%d %H:%M:%S') ERROR odoo-entrypoint: $*" >&2; exit 1; }

# NAME from the file $NAME_FILE when that is set (Docker secrets): the value then appears in no
# `docker inspect` output.
file_env() {
    eval "file=\${${1}_FILE:-}"
    if [ -n "$file" ]; then
        [ -r "$file" ] || die "$1_FILE=$file cannot be read"
        eval "$1=\$(cat \"\$file\")"
        export "$1"
        unset "${1}_FILE"
    fi
}
for name in ODOO_ADMIN_PASSWD ODOO_ADMIN_USER_PASSWORD PGPASSWORD COMPUTE_BRIDGE_BROKER_URL \
        COMPUTE_BRIDGE_HEARTBEAT_SECRET; do
    file_env "$name"
done

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

module_state() {  # the module's state in PGDATABASE; empty when Odoo never initialised it
    initialised=$(psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT to_regclass('public.ir_module_module') IS NOT NULL")
    if [ "$initialised" = t ]; then
        psql -XAtq -v ON_ERROR_STOP=1 -c "SELECT state FROM ir_module_module WHERE name = '$MODULE'"
    fi
}

case "${1:-odoo}" in
    init)
        shift
        state=$(module_state) || die "cannot query database $PGDATABASE"
        if [ "$state" = installed ]; then
            # -i on an installed module reloads its data in init mode (records marked noupdate
            # are rewritten): an installed module is only ever updated, by the upgrade step.
            log "$MODULE is already installed in $PGDATABASE: nothing to do"
            exit 0
        fi
        [ -n "${ODOO_ADMIN_USER_PASSWORD:-}" ] ||
            die "ODOO_ADMIN_USER_PASSWORD (or ODOO_ADMIN_USER_PASSWORD_FILE) is not set"
        log "installing $MODULE in $PGDATABASE"
        # shellcheck disable=SC2086
        odoo --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --db-filter "^${PGDATABASE}\$" \
            $ONE_SHOT_OPTIONS --init "$MODULE" "$@"
        log "setting the admin user's password"
        # Odoo's shell runs the script it reads on stdin; the password stays in the environment.
        odoo shell --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --no-http "$@" <<'PYEOF'
import os
env.ref("base.user_admin").password = os.environ["ODOO_ADMIN_USER_PASSWORD"]
env.cr.commit()
PYEOF
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
        for arg in "$@"; do
            case "$arg" in
                -i | -i* | --init | --init=* | -u | -u* | --update | --update=*)
                    die "the server does not install or update modules ($arg): use the init or upgrade step" ;;
            esac
        done
        ;;
esac
exec odoo --config "$ODOO_RUNTIME_RC" --database "$PGDATABASE" --db-filter "^${PGDATABASE}\$" "$@"
