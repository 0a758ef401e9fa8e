#!/bin/sh
# The Nameko services' container (services/Dockerfile): secrets from the environment or, for
# Docker secrets, from files named by NAME_FILE (AMQP_URI_FILE, HEARTBEAT_SECRET_FILE), so that
# they appear in no `docker inspect` output. Then the command, as given.
set -eu
# shellcheck source=docker/entrypoint-lib.sh
. "$(dirname "$0")/entrypoint-lib.sh"
for name in AMQP_URI HEARTBEAT_SECRET; do
    file_env "$name"
done
check_broker_url AMQP_URI
exec "$@"
