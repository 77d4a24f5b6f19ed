#!/bin/sh
# Entry point of the PostgreSQL image (postgres.Dockerfile): make the cluster
# on first start, then run the server in the foreground as user postgres.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=atelier}"
: "${POSTGRES_DB:=atelier}"
: "${POSTGRES_PASSWORD:=atelier}"

if [ "$(id -u)" = 0 ]; then
    # The volume may come from a host directory owned by someone else.
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    # setpriv execs (runuser would stay as PID 1 between docker and postgres).
    HOME=/var/lib/postgresql exec setpriv --reuid=postgres --regid=postgres --init-groups \
        -- "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "atelier-postgres: initialising $PGDATA (user $POSTGRES_USER, db $POSTGRES_DB)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    cat >>"$PGDATA/postgresql.conf" <<CONF
# docker-compose: reachable on the compose network.
listen_addresses = '*'
max_connections = 200
shared_buffers = 128MB
logging_collector = off
CONF
    cat >>"$PGDATA/pg_hba.conf" <<HBA
# docker-compose: any address, password required.
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
HBA
    if [ "$POSTGRES_DB" != postgres ]; then
        # A private server on the Unix socket only, just to create the database.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >/dev/null
        createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
