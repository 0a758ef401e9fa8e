#!/bin/sh
# Run once by the postgres image, on the first start of an empty data volume (a script in
# /docker-entrypoint-initdb.d): the role Odoo connects as, and its database.
#
# The role is NOSUPERUSER NOCREATEDB NOCREATEROLE: it owns the one database Odoo serves and can
# do nothing else. Odoo never creates a database here (list_db = False, and the role may not);
# the init step installs the addon into this one. pg_trgm is created now, as the superuser,
# because Odoo 18 uses it for its trigram indexes.
#
# ODOO_DB_PASSWORD may instead be given as a file, ODOO_DB_PASSWORD_FILE (Docker secrets).
set -eu

if [ -n "${ODOO_DB_PASSWORD_FILE:-}" ]; then
    ODOO_DB_PASSWORD=$(cat "$ODOO_DB_PASSWORD_FILE")
fi
: "${ODOO_DB_USER:?ODOO_DB_USER: the role Odoo connects as}"
: "${ODOO_DB_PASSWORD:?ODOO_DB_PASSWORD (or ODOO_DB_PASSWORD_FILE): that role's password}"
: "${ODOO_DB_NAME:?ODOO_DB_NAME: the database Odoo serves}"

# psql variables, quoted by psql itself (:"name" as an identifier, :'name' as a literal): a
# password with quotes in it cannot break out of the statement.
psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v role="$ODOO_DB_USER" -v password="$ODOO_DB_PASSWORD" -v db="$ODOO_DB_NAME" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
\connect :"db"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
