// The dashboard page of `strangler ui`: renders each state the server pushes over Server-Sent
// Events (no reload), and posts promote and rollback with the admin token in a header.
// SECURITY: everything from the server (response bodies of shadow samples, reasons, names) is
// put in the page as text (textContent), never parsed as HTML; the token stays in this page's
// memory (never a cookie, never the URL, never storage).
'use strict';

const $ = (id) => document.getElementById(id);
const SVG = 'http://www.w3.org/2000/svg';
/** Whether the last state said actions are on (a token is configured). */
let actionsOn = false;

/** h('td', { class: 'x' }, 'text', child…): an element with attributes and text or element children. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const fill = (el, ...children) => el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
const bytes = (b) => (b === null || b === undefined ? '-' : b < 1024 ? `${b} B` : b < 1048576 ? `${(b / 1024).toFixed(1)} kB` : `${(b / 1048576).toFixed(1)} MB`);
const pct = (v) => (v === null || v === undefined ? '-' : `${v.toFixed(2)}%`);
const ms = (v) => (v === null || v === undefined ? '-' : `${v} ms`);
const time = (iso) => new Date(iso).toLocaleTimeString();
const empty = (text) => h('p', { class: 'empty' }, text);

/** A share bar; its width set through the CSSOM (the page's policy forbids style attributes). */
function bar(percent) {
  const inner = h('span', {});
  inner.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return h('span', { class: 'bar' }, inner);
}

/** A small line chart: series of { values, cls } over the same x; no library. */
function chart(series, { height = 90, label = '' } = {}) {
  const width = 600;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const max = Math.max(1e-9, ...all);
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'chart');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  for (const s of series) {
    let d = '';
    const known = (i) => i >= 0 && i < s.values.length && s.values[i] !== null && Number.isFinite(s.values[i]);
    s.values.forEach((v, i) => {
      if (!known(i)) return;
      const x = (i / (n - 1)) * (width - 4) + 2;
      const y = height - 4 - (v / max) * (height - 18);
      d += `${known(i - 1) ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)} `;
      // A value between two gaps (one interval with traffic) is drawn as a dot.
      if (!known(i - 1) && !known(i + 1)) d += 'l0.01,0 ';
    });
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', d.trim() || 'M0,0');
    path.setAttribute('fill', 'none');
    path.setAttribute('stroke', s.color);
    path.setAttribute('stroke-width', '2');
    path.setAttribute('stroke-linecap', 'round');
    path.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(path);
  }
  const t = document.createElementNS(SVG, 'text');
  t.setAttribute('x', '4');
  t.setAttribute('y', '11');
  t.textContent = all.length ? `${label} · max ${label.includes('lag') ? bytes(max) : Math.round(max * 100) / 100}` : `${label} · no samples yet`;
  svg.append(t);
  return svg;
}

function renderRoutes(s) {
  fill(
    $('routes').tBodies[0],
    s.prefixes.map((p) =>
      h(
        'tr',
        { 'data-prefix': p.prefix },
        h('td', {}, p.order),
        h('td', {}, h('code', {}, p.prefix)),
        h('td', {}, p.service),
        h('td', { class: 'phase' }, h('span', { class: `badge phase-${p.phase}` }, p.phase)),
        h('td', { class: 'mode' }, p.mode + (p.methods ? ` (${p.methods.join(',')})` : '')),
        h('td', { class: 'weight' }, bar(p.mode === 'service' ? 100 : p.mode === 'canary' ? p.weight : 0), p.mode === 'canary' ? `${p.weight}%` : p.mode === 'service' ? '100%' : '-'),
        h(
          'td',
          { class: 'gateways' },
          h('span', { class: p.gateways.acknowledged === p.gateways.live ? 'ok' : 'warn' }, `${p.gateways.acknowledged}/${p.gateways.live} @v${p.gateways.version} `),
          p.acks.map((a) => h('span', { class: `chip ${a.acknowledged ? 'ok' : 'behind'}`, title: a.acknowledged ? 'applied this route' : 'has not applied it yet' }, `${a.gateway} v${a.version}`)),
        ),
        h('td', {}, p.instances ? `${p.instances.available}/${p.instances.total} up` : '-'),
        h('td', { class: 'next' }, p.next.refused ? `— ${p.next.refused}` : `${p.next.command}${p.next.checks.length ? ` (checks: ${p.next.checks.join(', ')})` : ''}`),
      ),
    ),
  );
  const select = $('action-prefix');
  const chosen = select.value;
  if (select.options.length !== s.prefixes.length) {
    fill(select, s.prefixes.map((p) => h('option', { value: p.prefix }, `${p.prefix} (${p.phase})`)));
    if (chosen) select.value = chosen;
  } else s.prefixes.forEach((p, i) => (select.options[i].textContent = `${p.prefix} (${p.phase})`));
  actionsOn = s.actions;
  for (const b of [$('promote'), $('rollback')]) {
    b.disabled = !s.actions;
    b.title = s.actions ? '' : 'actions are off: strangler ui runs without gateway.adminToken';
  }
}

function renderSync(s) {
  if (!s.pipelines.length) return fill($('sync'), empty('no sync pipeline has started (strangler sync start <service>)'));
  const title = (p) => `${p.service} ${p.direction === 'forward' ? 'legacy → service' : 'service → legacy'}`;
  // Pipelines that report a position get a chart; those that cannot be read, one line each.
  const charted = s.pipelines.filter((p) => p.history.some((x) => x.lagBytes !== null));
  const unread = s.pipelines.filter((p) => !charted.includes(p));
  fill(
    $('sync'),
    charted.map((p) =>
      h(
        'div',
        { class: 'card', 'data-pipeline': `${p.service} ${p.direction}` },
        h(
          'div',
          { class: 'figures' },
          h('b', {}, title(p)),
          h('span', { class: p.state.startsWith('streaming') ? 'ok' : 'warn' }, p.state),
          h('span', {}, `lag ${bytes(p.lagBytes)} / ${p.lagSeconds === null ? '?' : `${p.lagSeconds.toFixed(1)} s`}`),
          h('span', {}, `${p.rowsApplied} rows applied`),
          h('span', { class: p.conflicts ? 'warn' : '' }, `${p.conflicts} conflicts`),
        ),
        chart([{ values: p.history.map((x) => x.lagBytes), color: 'var(--svc)' }], { label: 'lag' }),
      ),
    ),
    unread.length ? h('ul', { class: 'compact' }, unread.map((p) => h('li', { 'data-pipeline': `${p.service} ${p.direction}` }, h('b', {}, title(p)), ' ', h('span', { class: 'warn' }, p.state)))) : null,
  );
}

function renderCanary(s) {
  if (!s.canary.length) fill($('canary'), empty('no canary traffic in the last minutes'));
  else
    fill(
      $('canary'),
      s.canary.map((c) => {
        const last = [...c.intervals].reverse().find((i) => i.service.requests || i.legacy.requests);
        return h(
          'div',
          { class: 'card', 'data-canary': c.prefix },
          h(
            'div',
            { class: 'figures' },
            h('b', {}, c.prefix),
            h('span', { class: 'legend' }, `intervals of ${c.stepMs / 1000} s · `, h('span', { class: 'svc' }, 'service'), ' vs ', h('span', { class: 'legacy' }, 'legacy')),
            last ? h('span', {}, `last: ${pct(last.service.errorPercent)} ${ms(last.service.p99Ms)} vs ${pct(last.legacy.errorPercent)} ${ms(last.legacy.p99Ms)}`) : null,
          ),
          chart([{ values: c.intervals.map((i) => i.service.errorPercent), color: 'var(--svc)' }, { values: c.intervals.map((i) => i.legacy.errorPercent), color: 'var(--legacy)' }], { label: 'error %' }),
          chart([{ values: c.intervals.map((i) => i.service.p99Ms), color: 'var(--svc)' }, { values: c.intervals.map((i) => i.legacy.p99Ms), color: 'var(--legacy)' }], { label: 'p99 ms' }),
        );
      }),
    );
  fill($('analyses'), s.analyses.length ? s.analyses.map((a) => h('li', {}, h('span', { class: a.ok ? 'ok' : 'bad' }, a.ok ? 'passed ' : 'FAILED '), `${time(a.at)} ${a.service} ${a.name}: ${a.reason}`)) : [h('li', { class: 'empty' }, 'none recorded yet')]);
}

function pretty(body) {
  if (body === null || body === undefined) return '(no answer)';
  try {
    return JSON.stringify(JSON.parse(body), null, 2);
  } catch {
    return body;
  }
}

function renderShadow(s) {
  if (!s.shadow.length) return fill($('shadow'), empty('no shadowed request compared yet (strangler cutover <prefix> --shadow)'));
  fill(
    $('shadow'),
    s.shadow.map((x) => {
      const c = (k) => Number(x.counts[k] || 0);
      return h(
        'div',
        { class: 'card', 'data-shadow': x.prefix },
        h('div', { class: 'figures' }, h('b', {}, x.prefix), h('span', { class: 'ok' }, `${c('match')} matched`), h('span', {}, `${c('noise')} noise`), h('span', {}, `${c('lagged')} lagged`), h('span', { class: c('mismatch') ? 'bad' : '' }, `${c('mismatch')} mismatched`), h('span', {}, `${c('error')} errors`)),
        x.noisyPaths.length ? h('p', { class: 'muted' }, `noisy paths: ${x.noisyPaths.map((n) => `${n.path} ×${n.times}`).join(', ')}`) : null,
        x.samples.map((m) =>
          h(
            'div',
            { class: 'sample' },
            h('div', { class: 'muted' }, `${time(m.at)} ${m.method} ${m.path} (request ${m.requestId})`),
            h('div', { class: 'side-by-side' }, h('div', {}, h('div', { class: 'legend' }, h('span', { class: 'legacy' }, `legacy ${m.legacy.status}`)), h('pre', {}, pretty(m.legacy.body))), h('div', {}, h('div', { class: 'legend' }, h('span', { class: 'svc' }, `service ${m.service ? m.service.status : 'no answer'}`)), h('pre', {}, pretty(m.service && m.service.body)))),
            h('ul', { class: 'diffs' }, m.diffs.map((d) => h('li', {}, `${d.kind} ${d.path}: legacy ${JSON.stringify(d.legacy)} · service ${JSON.stringify(d.service)}`))),
          ),
        ),
      );
    }),
  );
}

function renderInstances(s) {
  const services = s.instances.filter((x) => x.instances.length);
  if (!services.length) return fill($('instances'), empty('no instance reported by a gateway'));
  fill(
    $('instances'),
    services.map((x) =>
      h(
        'div',
        { class: 'card' },
        h('div', { class: 'figures' }, h('b', {}, x.service), h('span', {}, `${x.available}/${x.instances.length} available`), h('span', { class: 'muted' }, `discovery ${x.discovery}`)),
        h(
          'div',
          { class: 'scroll' },
          h(
          'table',
          {},
          h('tr', {}, ['instance', 'url', 'health', 'ejected', 'in-flight', 'err 1m'].map((t) => h('th', {}, t))),
          x.instances.map((r) => {
            const states = Object.values(r.health);
            const healthy = states.length > 0 && states.every((v) => v === 'healthy');
            // As strangler services says it: one word when every gateway agrees.
            const health = states.length === 0 ? 'unknown' : states.every((v) => v === states[0]) ? states[0] : `healthy on ${states.filter((v) => v === 'healthy').length}/${states.length}`;
            const ejected = Object.values(r.ejected);
            return h(
              'tr',
              {},
              h('td', {}, r.id),
              h('td', {}, r.url),
              h('td', { class: healthy ? 'ok' : states.length ? 'bad' : 'muted' }, health + (r.weightPercent < 100 ? ` (warming, ${r.weightPercent}%)` : '')),
              h('td', { class: ejected.length ? 'bad' : '' }, ejected.length ? `yes, ${Math.ceil(Math.max(...ejected) / 1000)} s left (${r.ejections}×)` : r.ejections ? `no (${r.ejections}× before)` : 'no'),
              h('td', {}, r.inFlight),
              h('td', {}, r.errorRate === null ? '-' : `${r.errorRate.toFixed(1)}%`),
            );
          }),
          ),
        ),
      ),
    ),
  );
}

function renderAudit(s) {
  if (!s.history.length) return fill($('audit'), h('li', { class: 'empty' }, 'no change recorded yet'));
  fill(
    $('audit'),
    s.history.map((r) =>
      h(
        'li',
        { class: r.outcome },
        h('time', { datetime: r.at }, time(r.at)),
        h('b', {}, `${r.command} ${r.prefix || ''}`),
        ` ${r.from_phase || '?'} → ${r.to_phase || '-'} `,
        h('span', { class: r.outcome === 'applied' ? 'ok' : 'bad' }, r.outcome + (r.forced ? ' (FORCED)' : '')),
        r.route_version ? ` v${r.route_version}` : '',
        h('span', { class: 'muted' }, ` by ${r.actor}`),
        r.reason ? h('div', { class: 'muted' }, `“${r.reason}”`) : null,
        r.outcome === 'refused' && r.details && r.details.why ? h('div', { class: 'bad' }, `why: ${r.details.why}`) : null,
      ),
    ),
  );
}

function render(state) {
  const banner = $('error');
  banner.hidden = !state.error;
  banner.textContent = state.error || '';
  const s = state.snapshot;
  if (!s) return;
  $('updated').textContent = `updated ${time(s.at)}`;
  document.body.dataset.updated = s.at;
  for (const f of [renderRoutes, renderSync, renderCanary, renderShadow, renderInstances, renderAudit]) {
    try {
      f(s);
    } catch (err) {
      console.error(f.name, err);
    }
  }
}

function connect() {
  const events = new EventSource('/api/events');
  events.addEventListener('state', (e) => render(JSON.parse(e.data)));
  events.onopen = () => {
    $('live-dot').classList.add('on');
    $('live-text').textContent = 'live';
  };
  events.onerror = () => {
    $('live-dot').classList.remove('on');
    $('live-text').textContent = 'reconnecting…';
  };
}

async function act(action) {
  const out = $('action-result');
  const prefix = $('action-prefix').value;
  const reason = $('action-reason').value.trim();
  const token = $('action-token').value;
  out.hidden = false;
  out.classList.remove('failed');
  if (action === 'rollback' && !reason) {
    out.classList.add('failed');
    out.textContent = 'rollback needs a reason: it is recorded in the audit log';
    return;
  }
  out.textContent = `${action} ${prefix}…`;
  for (const b of [$('promote'), $('rollback')]) b.disabled = true;
  try {
    const res = await fetch(`/api/actions/${action}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify({ prefix, reason }),
    });
    const body = await res.json();
    const text = body.text || (body.error ? `error [${body.error.code}]: ${body.error.message}` : JSON.stringify(body));
    const exit = body.exitCode !== undefined ? body.exitCode : 2;
    out.classList.toggle('failed', exit !== 0);
    out.dataset.exit = String(exit);
    out.textContent = `${text}\n(exit ${exit}, as the CLI)`;
  } catch (err) {
    out.classList.add('failed');
    out.textContent = `could not reach strangler ui: ${err.message}`;
  } finally {
    for (const b of [$('promote'), $('rollback')]) b.disabled = !actionsOn;
  }
}

$('promote').addEventListener('click', () => act('promote'));
$('rollback').addEventListener('click', () => act('rollback'));
connect();
