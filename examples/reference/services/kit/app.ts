import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import express, { type Express } from 'express';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Logger } from '../../../../core/logger.ts';
import { createErrorHandler, createNotFoundHandler } from './http-error.ts';
import { createRequestId } from '../../../../sdk/request-id.ts';
import { createTracingMiddleware, type Tracing } from '../../../../sdk/tracing.ts';
import { matchedRoute, recordMatchedRoute } from '../../../../sdk/matched-route.ts';

export interface AppOptions {
  /** Shown by /health. */
  name: string;
  logger: Logger;
  /** Checks /health runs (e.g. `database: SELECT 1`); a throw makes /health answer 503. */
  health?: Record<string, () => Promise<unknown>>;
  /** JSON body limit (bytes). */
  jsonLimit?: number;
  /** Set when tracing is on: a span per request, its database queries' spans under it. */
  tracing?: Tracing;
}

/**
 * The skeleton every app of the toolkit shares: request id and a child logger, JSON bodies,
 * /health. Mount routers on it, then call `finishApp` to add the 404 and the error handler.
 */
export function createApp(options: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  if (options.tracing) app.use(createTracingMiddleware(options.tracing));
  app.use(createRequestId(options.logger));
  // Prometheus metrics per app (own registry: several apps share a process in tests and the demo).
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: `${options.name.replace(/\W/g, '_')}_` });
  const requests = new Counter({ name: 'http_requests_total', help: 'Requests by method, route and status class', labelNames: ['method', 'route', 'class'] as const, registers: [registry] });
  const duration = new Histogram({ name: 'http_request_duration_seconds', help: 'Time to the last byte', labelNames: ['method', 'route'] as const, buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [registry] });
  app.use(function measure(req, res, next) {
    const end = duration.startTimer();
    recordMatchedRoute(req);
    res.on('finish', () => {
      // The matched route pattern (not the raw path), so ids do not explode the label set.
      const route = matchedRoute(req) ?? 'unmatched';
      requests.inc({ method: req.method, route, class: `${Math.floor(res.statusCode / 100)}xx` });
      end({ method: req.method, route });
    });
    next();
  });
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  app.use(express.json({ limit: options.jsonLimit ?? 1024 * 1024 }));
  app.get('/health', async (_req, res) => {
    const checks: Record<string, string> = {};
    let ok = true;
    for (const [name, check] of Object.entries(options.health ?? {})) {
      try {
        await check();
        checks[name] = 'ok';
      } catch (err) {
        ok = false;
        checks[name] = `failing: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    res.status(ok ? 200 : 503).json({ status: ok ? 'ok' : 'failing', service: options.name, checks });
  });
  return app;
}

export function finishApp(app: Express): Express {
  app.use(createNotFoundHandler());
  app.use(createErrorHandler());
  return app;
}

export interface RunningServer {
  url: string;
  port: number;
  server: Server;
  /** Stops accepting, lets in-flight requests finish (up to `graceMs`), then closes what is left. */
  close(graceMs?: number): Promise<void>;
}

export async function listen(app: Express, port = 0, host = '127.0.0.1'): Promise<RunningServer> {
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, (err?: Error) => (err ? reject(err) : resolve(s)));
    s.once('error', reject);
  });
  server.keepAliveTimeout = 65_000; // longer than a gateway's idle pool timeout, so it never reuses a closing socket
  const address = server.address() as AddressInfo;
  let closing: Promise<void> | null = null;
  // Bound to every interface (a container): others reach it by this machine's name.
  const reachable = host === '0.0.0.0' || host === '::' ? hostname() : host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${reachable}:${address.port}`,
    port: address.port,
    server,
    close(graceMs = 5_000) {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        // Keep-alive connections become idle as their last response ends: close them as they do.
        const sweep = setInterval(() => server.closeIdleConnections(), 20);
        server.close(() => {
          clearTimeout(timer);
          clearInterval(sweep);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}
