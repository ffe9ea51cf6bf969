# One image for every strangler process (gateway, control init, sync workers, OCR workers, and
# the reference monolith and services of the demo), picked by the command: `docker run
# strangler:local gateway --config …`.

# Build: the TypeScript compiled to dist/, then only production dependencies kept.
FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY core ./core
COPY sdk ./sdk
COPY stack ./stack
COPY gateway ./gateway
COPY cutover ./cutover
COPY migrations ./migrations
COPY cli ./cli
# The dashboard (strangler ui): its server, and the page's files the build copies to dist/ui/public.
COPY ui ./ui
# The reference example, which the compose file and the manifests run beside the toolkit.
COPY examples/reference ./examples/reference
RUN npm run build && npx tsc -p examples/reference/tsconfig.build.json && npm prune --omit=dev --no-audit --no-fund

# Runtime: Node LTS slim, no compiler, no TypeScript loader, not root.
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build --chown=node:node /src/package.json ./
COPY --from=build --chown=node:node /src/node_modules ./node_modules
COPY --from=build --chown=node:node /src/dist ./dist
COPY --from=build --chown=node:node /src/bin ./bin
COPY --from=build --chown=node:node /src/examples/reference/bin.js ./examples/reference/bin.js
COPY --chown=node:node strangler.yaml strangler.compose.yaml strangler.schema.json ./
USER node
# The process's health endpoint, when it has one (the gateway: http://127.0.0.1:5000/healthz);
# without STRANGLER_HEALTH_URL (sync and OCR workers) a running process is a healthy one.
ENV STRANGLER_HEALTH_URL=""
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "const u=process.env.STRANGLER_HEALTH_URL;if(!u)process.exit(0);fetch(u).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "bin/strangler.js"]
