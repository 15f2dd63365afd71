#!/bin/bash
# Runs once, when the postgres container initialises its volume (docker-entrypoint-initdb.d).
# POSTGRES_DB (the warehouse) exists already; Airflow's metadata and the OLTP source get theirs.
set -euo pipefail
for db in airflow fluxo_source; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
