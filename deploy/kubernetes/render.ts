/**
 * Renders the Kubernetes manifests (kustomize layout) from the same two files the compose
 * deployment runs from: docker-compose.yml (which processes, their commands, health endpoints
 * and databases) and strangler.compose.yaml (the configuration, whose host names are the
 * compose service names and so also the Kubernetes Service names). `npm run k8s` writes them;
 * deploy/kubernetes/kubernetes.test.ts fails when the committed files differ from a render.
 *
 *   base/                   the strangler processes: gateway (HPA, PDB), control init Job,
 *                           legacy and the services, sync workers, OCR workers, the config
 *   components/databases/   PostgreSQL (wal_level=logical) per database and Redis, in the
 *                           cluster: for trying it out; production points the config at its own
 *   overlays/reference/     base + databases: the reference migration, runnable as is
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';

const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '../..');
const IMAGE = 'strangler:0.1.0';
const CONFIG_DIR = '/etc/strangler';
const CONFIG_FILE = `${CONFIG_DIR}/strangler.yaml`;
/** Secrets (the strangler secrets, PGPASSWORD, POSTGRES_PASSWORD, REDIS_PASSWORD, REDIS_URL): made from secrets.env, never rendered. */
const SECRET = 'strangler-secrets';

type Manifest = Record<string, unknown>;
interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  /** The reference example's services run through its own entry point (examples/reference/bin.js). */
  entrypoint?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  restart?: string;
  ports?: string[];
}

/**
 * Requests and limits, from the benches on a 2-core machine (docs/performance.md, docs/deploy.md):
 * a gateway worker saturates about one core; services and sync workers stay under a quarter of
 * one at the demo's load; tesseract takes a core and ~400 MiB per concurrent job.
 */
const RESOURCES = {
  gateway: { requests: { cpu: '500m', memory: '256Mi' }, limits: { memory: '512Mi' } },
  service: { requests: { cpu: '250m', memory: '192Mi' }, limits: { memory: '512Mi' } },
  sync: { requests: { cpu: '250m', memory: '192Mi' }, limits: { memory: '1Gi' } },
  ocr: { requests: { cpu: '1', memory: '768Mi' }, limits: { memory: '1536Mi' } },
  job: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
  postgres: { requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '1Gi' } },
  redis: { requests: { cpu: '100m', memory: '64Mi' }, limits: { memory: '256Mi' } },
};

const labels = (name: string, component: string) => ({ 'app.kubernetes.io/name': name, 'app.kubernetes.io/part-of': 'strangler', 'app.kubernetes.io/component': component });

/** The port and path of a compose healthcheck that fetches http://127.0.0.1:<port><path>. */
function healthOf(s: ComposeService): { port: number; path: string } | null {
  const m = s.healthcheck?.test.join(' ').match(/http:\/\/127\.0\.0\.1:(\d+)(\/[^'"\s)]*)/);
  return m ? { port: Number(m[1]), path: m[2] } : null;
}

function kindOf(name: string, s: ComposeService): 'gateway' | 'job' | 'sync' | 'ocr' | 'service' {
  const cmd = s.command ?? [];
  if (name === 'gateway') return 'gateway';
  if (s.restart === 'no') return 'job';
  if (cmd[0] === 'sync') return 'sync';
  if (cmd[0] === 'ocr') return 'ocr';
  return 'service';
}

function container(name: string, s: ComposeService, kind: keyof typeof RESOURCES) {
  const args = (s.command ?? []).map((a) => (a.startsWith('/app/strangler') ? CONFIG_FILE : a));
  const health = healthOf(s);
  const probe = (path: string) => ({ httpGet: { path, port: 'http' }, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 3 });
  return {
    name,
    image: IMAGE,
    ...(s.entrypoint ? { command: s.entrypoint } : {}),
    args,
    env: [
      { name: 'STRANGLER_CONFIG', value: CONFIG_FILE },
      { name: 'STRANGLER_HOST', value: '0.0.0.0' },
      ...(health ? [{ name: 'STRANGLER_HEALTH_URL', value: `http://127.0.0.1:${health.port}${name === 'gateway' ? '/healthz' : health.path}` }] : []),
    ],
    envFrom: [{ secretRef: { name: SECRET } }],
    ...(health ? { ports: [{ name: 'http', containerPort: health.port }] } : {}),
    ...(health
      ? name === 'gateway'
        ? { readinessProbe: probe('/readyz'), livenessProbe: { ...probe('/healthz'), periodSeconds: 10 }, startupProbe: { ...probe('/healthz'), failureThreshold: 30 } }
        : { readinessProbe: probe(health.path), livenessProbe: { ...probe(health.path), periodSeconds: 10 }, startupProbe: { ...probe(health.path), failureThreshold: 60 } }
      : {}),
    resources: RESOURCES[kind],
    // The root file system is read-only: the gateway's route snapshot (.strangler/) and
    // scratch files go to the pod's own volumes.
    volumeMounts: [
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'state', mountPath: '/app/.strangler' },
      { name: 'tmp', mountPath: '/tmp' },
    ],
    securityContext: { runAsNonRoot: true, runAsUser: 1000, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
  };
}

const podSpec = (c: ReturnType<typeof container>, extra: Record<string, unknown> = {}) => ({
  ...extra,
  containers: [c],
  volumes: [
    { name: 'config', configMap: { name: 'strangler-config' } },
    { name: 'state', emptyDir: {} },
    { name: 'tmp', emptyDir: {} },
  ],
});

function appManifests(name: string, s: ComposeService): Manifest[] {
  const kind = kindOf(name, s);
  const meta = { name, labels: labels(name, kind) };
  const selector = { matchLabels: { 'app.kubernetes.io/name': name } };
  const c = container(name, s, kind === 'service' ? 'service' : kind);
  if (kind === 'job') {
    return [{ apiVersion: 'batch/v1', kind: 'Job', metadata: meta, spec: { backoffLimit: 10, template: { metadata: { labels: labels(name, kind) }, spec: podSpec(c, { restartPolicy: 'OnFailure' }) } } }];
  }
  const out: Manifest[] = [];
  const deployment: Manifest = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta,
    spec: {
      replicas: kind === 'gateway' ? 2 : 1,
      selector,
      // A sync worker holds its pipeline's advisory lock: a second pod would only wait for it,
      // so one replica, and the old pod gone before the new one starts.
      ...(kind === 'sync' ? { strategy: { type: 'Recreate' } } : { strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } } }),
      template: {
        metadata: { labels: labels(name, kind) },
        // The gateway drains on SIGTERM (fenced writes finish); give it the time to.
        spec: podSpec(c, { terminationGracePeriodSeconds: kind === 'gateway' ? 45 : 30 }),
      },
    },
  };
  out.push(deployment);
  const health = healthOf(s);
  if (health) {
    out.push({ apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { selector: selector.matchLabels, ports: [{ name: 'http', port: health.port, targetPort: 'http' }] } });
  }
  if (kind === 'gateway') {
    out.push({
      apiVersion: 'autoscaling/v2',
      kind: 'HorizontalPodAutoscaler',
      metadata: meta,
      spec: { scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name }, minReplicas: 2, maxReplicas: 10, metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }] },
    });
    out.push({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: meta, spec: { minAvailable: 1, selector } });
  }
  return out;
}

function databaseManifests(name: string, s: ComposeService): Manifest[] {
  const meta = { name, labels: labels(name, 'database') };
  const selector = { matchLabels: { 'app.kubernetes.io/name': name } };
  if (s.image?.startsWith('redis')) {
    return [
      {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: meta,
        spec: {
          replicas: 1,
          selector,
          template: {
            metadata: { labels: labels(name, 'database') },
            spec: {
              containers: [
                {
                  name,
                  image: s.image,
                  command: ['sh', '-c', 'exec redis-server --requirepass "$REDIS_PASSWORD" --save "" --appendonly no'],
                  envFrom: [{ secretRef: { name: SECRET } }],
                  ports: [{ name: 'redis', containerPort: 6379 }],
                  readinessProbe: { exec: { command: ['sh', '-c', 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG'] }, periodSeconds: 5 },
                  resources: RESOURCES.redis,
                },
              ],
            },
          },
        },
      },
      { apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { selector: selector.matchLabels, ports: [{ name: 'redis', port: 6379, targetPort: 'redis' }] } },
    ];
  }
  return [
    {
      apiVersion: 'apps/v1',
      kind: 'StatefulSet',
      metadata: meta,
      spec: {
        serviceName: name,
        replicas: 1,
        selector,
        template: {
          metadata: { labels: labels(name, 'database') },
          spec: {
            containers: [
              {
                name,
                image: s.image,
                args: s.command,
                env: [
                  { name: 'POSTGRES_DB', value: s.environment?.POSTGRES_DB ?? 'postgres' },
                  { name: 'PGDATA', value: '/var/lib/postgresql/data/pgdata' },
                ],
                envFrom: [{ secretRef: { name: SECRET } }],
                ports: [{ name: 'postgres', containerPort: 5432 }],
                readinessProbe: { exec: { command: ['pg_isready', '-U', 'postgres'] }, periodSeconds: 5 },
                resources: RESOURCES.postgres,
                volumeMounts: [{ name: 'data', mountPath: '/var/lib/postgresql/data' }],
              },
            ],
          },
        },
        volumeClaimTemplates: [{ metadata: { name: 'data' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '5Gi' } } } }],
      },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: meta, spec: { selector: selector.matchLabels, ports: [{ name: 'postgres', port: 5432, targetPort: 'postgres' }] } },
  ];
}

const yamlDocs = (docs: Manifest[]) => docs.map((d) => stringify(d, { lineWidth: 0 })).join('---\n');
const HEADER = '# Rendered by deploy/kubernetes/render.ts from docker-compose.yml and strangler.compose.yaml (npm run k8s). Do not edit.\n';

/** Every file of the layout, by path relative to deploy/kubernetes. */
export function renderKubernetes(): Map<string, string> {
  const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> };
  const files = new Map<string, string>();
  const groups: Record<string, Manifest[]> = { 'gateway.yaml': [], 'control-init.yaml': [], 'apps.yaml': [], 'sync.yaml': [], 'ocr-worker.yaml': [] };
  const databases: Manifest[] = [];
  for (const [name, s] of Object.entries(compose.services)) {
    if (!s.build) {
      databases.push(...databaseManifests(name, s));
      continue;
    }
    const kind = kindOf(name, s);
    const file = kind === 'gateway' ? 'gateway.yaml' : kind === 'job' ? 'control-init.yaml' : kind === 'sync' ? 'sync.yaml' : kind === 'ocr' ? 'ocr-worker.yaml' : 'apps.yaml';
    groups[file].push(...appManifests(name, s));
  }
  // Only the gateway takes traffic from outside the namespace (compose: the internal network).
  groups['gateway.yaml'].push({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'internal-only', labels: labels('internal-only', 'network') },
    spec: {
      podSelector: { matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'NotIn', values: ['gateway'] }] },
      policyTypes: ['Ingress'],
      ingress: [{ from: [{ podSelector: {} }] }],
    },
  });
  for (const [file, docs] of Object.entries(groups)) files.set(`base/${file}`, HEADER + yamlDocs(docs));
  files.set(
    'base/kustomization.yaml',
    HEADER +
      stringify({
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        namespace: 'strangler',
        resources: ['namespace.yaml', ...Object.keys(groups)],
        // strangler.yaml as a ConfigMap; its hash in the name rolls every pod when it changes.
        configMapGenerator: [{ name: 'strangler-config', files: ['strangler.yaml'] }],
        images: [{ name: IMAGE.split(':')[0], newTag: IMAGE.split(':')[1] }],
      }),
  );
  files.set('base/namespace.yaml', HEADER + stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'strangler' } }));
  files.set('base/strangler.yaml', HEADER + readFileSync(join(ROOT, 'strangler.compose.yaml'), 'utf8'));
  files.set('components/databases/databases.yaml', HEADER + yamlDocs(databases));
  files.set('components/databases/kustomization.yaml', HEADER + stringify({ apiVersion: 'kustomize.config.k8s.io/v1alpha1', kind: 'Component', resources: ['databases.yaml'] }));
  files.set(
    'overlays/reference/kustomization.yaml',
    HEADER + stringify({ apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace: 'strangler', resources: ['../../base'], components: ['../../components/databases'] }),
  );
  return files;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(HERE, 'render.ts')) {
  for (const [path, text] of renderKubernetes()) {
    const file = join(HERE, path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, text);
  }
  process.stdout.write('deploy/kubernetes: rendered\n');
}
