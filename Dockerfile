# sendas SMTP relay (README.md "Running in Docker" has these steps with their reasons).
#   docker build -t sendas .
#   sudo mkdir -p /srv/sendas && sudo cp config/relay.example.yaml /srv/sendas/relay.yaml   # then make it yours
#   docker run -d --name sendas -p 2525:2525 -p 9025:9025 -v /srv/sendas:/etc/sendas:ro \
#     -v /srv/sendas/secrets:/run/secrets:ro -v sendas-queue:/var/lib/sendas/queue -v sendas-state:/var/lib/sendas/state \
#     -e CRM_RELAY_PASSWORD -e MAIN_SMTP_PASSWORD -e M365_CLIENT_SECRET -e ALICE_PASSWORD -e OPS_TOKEN sendas
# Queue and state go to the volumes below (SENDAS_QUEUE_DIR, SENDAS_STATE_DIR) unless the config's
# queue.dir / state_dir name other directories: `docker exec sendas node /app/dist/cli/main.js check`
# says which. listen.host and http.host must be 0.0.0.0 (as in the example) for -p to reach them.

ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile src/ to dist/ --------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would run tsc before the sources are here; the build is the next step
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies + dist/ only ---------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    SENDAS_CONFIG=/etc/sendas/relay.yaml \
    SENDAS_QUEUE_DIR=/var/lib/sendas/queue \
    SENDAS_STATE_DIR=/var/lib/sendas/state
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would run tsc, which is a dev dependency; better-sqlite3's own install
# (its prebuilt binary for this Node) is then run on its own
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3 \
 && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
RUN groupadd --system sendas \
 && useradd --system --gid sendas --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin sendas \
 && mkdir -p /etc/sendas /var/lib/sendas/queue /var/lib/sendas/state \
 && chmod 700 /var/lib/sendas/state \
 && chown -R sendas:sendas /var/lib/sendas \
 && cp config/relay.example.yaml /etc/sendas/relay.example.yaml
# the queue: every accepted message lives here until it is delivered; keep it on a volume
# and rotated OAuth refresh tokens (state): both must survive replacing the container
VOLUME ["/var/lib/sendas/queue", "/var/lib/sendas/state"]
USER sendas
# 2525 SMTP (listen.port); 9025 monitoring (http.port): /healthz /readyz open, /metrics /status behind
# http.token, which the config needs once http.host is 0.0.0.0 (README "The monitoring port")
EXPOSE 2525 9025
# /healthz on the monitoring port from inside the container: http.port must stay 9025 and http.host
# 0.0.0.0 or 127.0.0.1 (or override this HEALTHCHECK). No curl in the image: Node's fetch asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9025/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# sendas handles SIGTERM itself (stops accepting, lets sessions in progress finish)
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
