#!/bin/sh
# The Nameko services' container (services/Dockerfile): secrets from the environment or, for
# Docker secrets, from files named by NAME_FILE (AMQP_URI_FILE, HEARTBEAT_SECRET_FILE), so that
# they appear in no `docker inspect` output. Then the command, as given.
set -eu
for name in AMQP_URI HEARTBEAT_SECRET; do
    eval "file=\${${name}_FILE:-}"
    if [ -n "$file" ]; then
        eval "$name=\$(cat \"\$file\")"
        export "$name"
        unset "${name}_FILE"
    fi
done
exec "$@"
