# One image for every strangler process (gateway, legacy monolith, services, workers).
FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm install --no-save tsx
COPY . .
ENTRYPOINT ["node", "bin/strangler.js"]
