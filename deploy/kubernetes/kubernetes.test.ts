import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2';
import { Job } from 'kubernetes-models/batch/v1';
import { ConfigMap, Namespace, Service } from 'kubernetes-models/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../../core/config/load.ts';
import { renderKubernetes } from './render.ts';

/**
 * The Kubernetes manifests (issue 23), validated offline: kustomize builds them (Debian's
 * kubectl), every object is checked against the Kubernetes OpenAPI schemas (kubernetes-models),
 * and they agree with strangler.compose.yaml and docker-compose.yml like the compose test.
 */
const HERE = import.meta.dirname;
const ROOT = resolve(HERE, '../..');
const config = loadConfig(join(ROOT, 'strangler.compose.yaml'));
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, { command?: string[]; entrypoint?: string[] }> };

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; spec?: any; data?: Record<string, string> };
const MODELS: Record<string, new (o: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'batch/v1/Job': Job,
  'v1/ConfigMap': ConfigMap,
  'v1/Namespace': Namespace,
  'v1/Service': Service,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
};

function build(dir: string): Obj[] {
  const out = execFileSync('kubectl', ['kustomize', join(HERE, dir)], { encoding: 'utf8' });
  return parseAllDocuments(out).map((d) => d.toJS() as Obj);
}

const hasKubectl = (() => {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

it('are the render of docker-compose.yml and strangler.compose.yaml (run: npm run k8s)', () => {
  for (const [path, text] of renderKubernetes()) expect(readFileSync(join(HERE, path), 'utf8'), `${path} is stale: npm run k8s`).toBe(text);
});

describe.skipIf(!hasKubectl)('the reference overlay, built by kustomize', () => {
  const objects = hasKubectl ? build('overlays/reference') : [];
  const named = (kind: string, name: string) => objects.find((o) => o.kind === kind && o.metadata.name === name);

  it('builds base and overlay, and every object is valid against the Kubernetes schemas', () => {
    expect(build('base').length).toBeGreaterThan(10);
    for (const o of objects) {
      const Model = MODELS[`${o.apiVersion}/${o.kind}`];
      expect(Model, `no schema check for ${o.apiVersion} ${o.kind}`).toBeDefined();
      expect(() => new Model(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      expect(o.metadata.namespace ?? 'strangler', `${o.kind}/${o.metadata.name}`).toBe('strangler');
    }
    expect(objects.some((o) => o.kind === 'Secret'), 'secrets are made from secrets.env, never shipped').toBe(false);
  });

  it('runs the gateway behind /readyz and /healthz probes, autoscaled, with a disruption budget', () => {
    const gateway = named('Deployment', 'gateway')!;
    const c = gateway.spec.template.spec.containers[0];
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.ports[0].containerPort).toBe(config.gateway.port);
    expect(named('HorizontalPodAutoscaler', 'gateway')!.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(named('PodDisruptionBudget', 'gateway')!.spec.minAvailable).toBe(1);
    expect(c.securityContext.runAsNonRoot).toBe(true);
  });

  it('has one Deployment and Service per service on the port of strangler.yaml, probed on its health path', () => {
    for (const s of config.services) {
      const c = named('Deployment', s.name)!.spec.template.spec.containers[0];
      expect(c.args.slice(0, 2)).toEqual(['service', s.name]);
      expect(c.command).toEqual(compose.services[s.name].entrypoint);
      expect(c.ports[0].containerPort).toBe(s.port);
      expect(c.readinessProbe.httpGet.path).toBe('/health');
      expect(named('Service', s.name)!.spec.ports[0].port).toBe(s.port);
      expect(named('StatefulSet', `${s.name}-db`)!.spec.template.spec.containers[0].args.join(' ')).toContain('wal_level=logical');
    }
    expect(named('Service', 'legacy')!.spec.ports[0].port).toBe(config.legacy.port);
  });

  it('runs every sync pipeline of the compose file as one replica, replaced not rolled', () => {
    const pipelines = Object.entries(compose.services).filter(([, s]) => s.command?.[0] === 'sync');
    expect(pipelines.length).toBeGreaterThan(0);
    for (const [name, s] of pipelines) {
      const d = named('Deployment', name)!;
      expect(d.spec.replicas, name).toBe(1);
      expect(d.spec.strategy.type, name).toBe('Recreate');
      expect(d.spec.template.spec.containers[0].args.filter((a: string) => a !== '/etc/strangler/strangler.yaml')).toEqual(s.command!.filter((a) => !a.startsWith('/app/')));
    }
  });

  it('initialises the control database in a Job and mounts strangler.yaml from a ConfigMap', () => {
    expect(named('Job', 'control-init')!.spec.template.spec.containers[0].args.slice(0, 2)).toEqual(['control', 'init']);
    const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('strangler-config'))!;
    expect(cm.data!['strangler.yaml']).toContain(readFileSync(join(ROOT, 'strangler.compose.yaml'), 'utf8'));
  });

  it('lets only the gateway take traffic from outside the namespace', () => {
    const policy = named('NetworkPolicy', 'internal-only')!;
    expect(policy.spec.podSelector.matchExpressions[0]).toEqual({ key: 'app.kubernetes.io/component', operator: 'NotIn', values: ['gateway'] });
    expect(policy.spec.ingress).toEqual([{ from: [{ podSelector: {} }] }]);
  });
});
