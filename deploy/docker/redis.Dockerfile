# Redis 7 from Debian 12 for docker-compose.yml (no image registry needed:
# only debian:bookworm-slim, which can be made locally, see docs/docker.md).
# Build context: deploy/docker.
FROM debian:bookworm-slim
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o redis -g redis -m 0750 /data
VOLUME /data
WORKDIR /data
EXPOSE 6379
USER redis
# Reached only on the compose network: no password, protected mode off.
# Append-only file, fsync every second: the job streams survive a restart.
CMD ["redis-server", "--bind", "*", "-::*", "--port", "6379", "--protected-mode", "no", \
     "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", \
     "--maxclients", "10000"]
