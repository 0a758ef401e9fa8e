#!/bin/sh
# Run once by the postgres image, on the first start of an empty data volume (a script in
# /docker-entrypoint-initdb.d): the role Odoo connects as, and its database.
#
# The role is NOSUPERUSER NOCREATEDB NOCREATEROLE: it owns the one database Odoo serves and
# cannot create databases or roles. Odoo never creates a database here (list_db = False, and the
# role may not); the init step installs the addon into this one. It keeps the default CONNECT on
# the empty maintenance database "postgres": Odoo's health check (/web/health?db_server_status=1)
# connects there to prove the server answers. pg_trgm is created now, as the superuser,
# because Odoo 18 uses it for its trigram indexes.
#
# ODOO_DB_PASSWORD may instead be given as a file, ODOO_DB_PASSWORD_FILE (Docker secrets).
set -eu

if [ -n "${ODOO_DB_PASSWORD_FILE:-}" ]; then
    ODOO_DB_PASSWORD=$(cat "$ODOO_DB_PASSWORD_FILE")
    export ODOO_DB_PASSWORD
fi
: "${ODOO_DB_USER:?ODOO_DB_USER: the role Odoo connects as}"
: "${ODOO_DB_PASSWORD:?ODOO_DB_PASSWORD (or ODOO_DB_PASSWORD_FILE): that role's password}"
: "${ODOO_DB_NAME:?ODOO_DB_NAME: the database Odoo serves}"

# psql reads the values from its environment (\getenv, PostgreSQL 15), so the password is on no
# command line (`ps`), and quotes them itself (:"name" as an identifier, :'name' as a literal): a
# password with quotes in it cannot break out of the statement.
psql -X -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" <<'SQL'
\getenv role ODOO_DB_USER
\getenv password ODOO_DB_PASSWORD
\getenv db ODOO_DB_NAME
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
\connect :"db"
CREATE EXTENSION IF NOT EXISTS pg_trgm;
SQL
