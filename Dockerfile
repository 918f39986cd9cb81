# sendas SMTP relay. Build: docker build -t sendas .
# Run:   docker run -d -p 2525:2525 -v /srv/sendas/relay.yaml:/etc/sendas/relay.yaml:ro sendas
# (listen.host must be 0.0.0.0 in the mounted config; see README.md "Running in Docker")

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
# --ignore-scripts: "prepare" would run tsc, which is a dev dependency
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
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
EXPOSE 2525
# /healthz on the monitoring port (http: in the config; keep it at its default 127.0.0.1:9025 in the
# container, or override this HEALTHCHECK). The image has no curl: Node's fetch does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9025/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# sendas handles SIGTERM itself (stops accepting, lets sessions in progress finish)
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["serve"]
