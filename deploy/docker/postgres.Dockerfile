# PostgreSQL 15 from Debian 12 for docker-compose.yml (no image registry
# needed: only debian:bookworm-slim, which can be made locally, see
# docs/docker.md). Build context: deploy/docker.
#
# On first start the entrypoint makes a cluster in $PGDATA (a volume) with the
# superuser and database $POSTGRES_USER / $POSTGRES_DB (default atelier),
# password $POSTGRES_PASSWORD (default atelier), local trust and
# scram-sha-256 over TCP from anywhere, and listens on all addresses.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
# No "main" cluster from the package's postinst: the entrypoint makes its own.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/atelier.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)" /usr/lib/postgresql/bin \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
ENV PATH=/usr/lib/postgresql/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    POSTGRES_USER=atelier \
    POSTGRES_DB=atelier \
    POSTGRES_PASSWORD=atelier
COPY postgres-entrypoint.sh /usr/local/bin/atelier-postgres
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["atelier-postgres"]
CMD ["postgres"]
