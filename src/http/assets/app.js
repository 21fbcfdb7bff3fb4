// shoal dashboard: plain DOM, no dependencies, no build step. Everything shown comes from the
// local agent's API; text from the mesh is only ever set as textContent (never as HTML).
'use strict';

const POLL_MS = 3000;
const MAX_EVENTS = 300;

const state = {
  health: null, nodes: [], graph: { nodes: [], edges: [] }, schedules: null, files: null,
  events: [], error: null, lastOk: 0, live: false, flash: null,
};

// ---- helpers -------------------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok) {
    let msg = 'HTTP ' + r.status;
    let reason = null;
    try { const b = await r.json(); msg = b.error || msg; reason = b.reason || null; } catch (_) { /* not JSON */ }
    const err = new Error(reason ? msg + ' (' + reason + ')' : msg);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

function nameOf(n) { return n.name || (n.key ? n.key.slice(0, 10) : '?'); }

function rel(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = Math.round((ms - Date.now()) / 1000);
  if (Math.abs(d) < 2) return 'just now';
  const a = Math.abs(d);
  const t = a < 60 ? a + 's' : a < 3600 ? Math.floor(a / 60) + 'm' : a < 86400 ? Math.floor(a / 3600) + 'h ' + Math.floor(a % 3600 / 60) + 'm' : Math.floor(a / 86400) + 'd ' + Math.floor(a % 86400 / 3600) + 'h';
  return d >= 0 ? 'in ' + t : t + ' ago';
}
function abs(ms) { return ms ? new Date(ms).toLocaleString() : ''; }
function ago(secs) { return secs === null || secs === undefined ? '—' : rel(Date.now() - secs * 1000); }
function bytes(n) {
  if (n === null || n === undefined) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0; let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v) + ' ' + u[i];
}
function time(ms) { return h('time', { datetime: new Date(ms).toISOString(), title: abs(ms) }, rel(ms)); }

function badge(text, kind) { return h('span', { class: 'badge b-' + kind }, text); }
// A node claiming a name another key holds is listed under its key, marked.
function conflictBadge(n) { return n.name_conflict ? [' ', badge('claims ' + n.name_conflict, 'warn')] : null; }
function stateBadge(n) {
  if (!n.state) return badge('gone', 'gone');
  if (n.state === 'alive') return badge('up', 'ok');
  if (n.state === 'suspect') return badge('suspect', 'warn');
  return badge('down', 'bad');
}
function jobBadge(status) {
  const kind = { success: 'ok', running: 'warn', skipped: 'gone', failed: 'bad', timeout: 'bad', aborted: 'bad' }[status] || 'gone';
  return badge(status, kind);
}
function table(headers, rows, attrs) {
  return h('div', { class: 'table-wrap' }, h('table', attrs || {},
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows)));
}

// ---- data ----------------------------------------------------------------------------------

async function refresh() {
  try {
    const [health, nodes, graph, schedules, files] = await Promise.all([
      api('/api/health'), api('/api/nodes'), api('/api/graph'), api('/api/schedules'), api('/api/files'),
    ]);
    Object.assign(state, { health, nodes: nodes.nodes, graph, schedules, files, error: null, lastOk: Date.now() });
  } catch (e) {
    state.error = e.message || String(e);
  }
  render();
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 300);
}

async function loadEvents() {
  try {
    const r = await api('/api/events?limit=100');
    const seen = new Set(state.events.map((e) => e.seq));
    for (const e of r.events) if (!seen.has(e.seq)) state.events.push(e);
    state.events.sort((a, b) => b.seq - a.seq);
  } catch (_) { /* shown by the poll */ }
  render();
}

function listen() {
  const es = new EventSource('/api/events/stream');
  es.onopen = () => { state.live = true; loadEvents(); };
  es.onerror = () => { state.live = false; renderConn(); };
  es.addEventListener('event', (m) => {
    const e = JSON.parse(m.data);
    if (!state.events.some((x) => x.seq === e.seq)) state.events.unshift(e);
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
    refreshSoon();
  });
}

// ---- pages ---------------------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  return { page: parts[0] || 'overview', arg: parts[1] };
}

function failingChecks() {
  const out = [];
  for (const n of state.nodes) for (const c of (n.report ? n.report.checks : [])) if (c.status === 'failing') out.push([n, c]);
  return out;
}

function allSchedules() {
  const out = [];
  for (const g of (state.schedules ? state.schedules.nodes : [])) for (const sc of g.schedules) out.push([g, sc]);
  return out;
}

function eventRow(e) {
  const kind = /down|failing|failed|degraded/.test(e.kind) ? 'bad' : /suspect|refused|expiring|conflict/.test(e.kind) ? 'warn' : /up|ok|recovered|joined/.test(e.kind) ? 'ok' : 'gone';
  return h('li', { 'data-kind': e.kind },
    time(e.at_ms), badge(e.kind.replace('_', ' '), kind),
    h('a', { href: '#/nodes/' + encodeURIComponent(e.node_name || e.node) }, e.node_name || e.node.slice(0, 10)),
    e.check ? h('span', {}, 'check ', h('strong', {}, e.check)) : null,
    e.schedule ? h('span', {}, 'schedule ', h('strong', {}, e.schedule)) : null,
    e.detail ? h('span', { class: 'muted' }, e.detail) : null);
}

function overview() {
  const up = state.nodes.filter((n) => n.up).length;
  const failedJobs = allSchedules().filter(([, sc]) => sc.last && ['failed', 'timeout', 'aborted'].includes(sc.last.status));
  const fails = failingChecks();
  const files = state.files ? state.files.files.filter((f) => !f.deleted) : [];
  const card = (label, value, note, href) => h('a', { class: 'card', href, style: 'text-decoration:none;color:inherit' },
    h('div', { class: 'muted' }, label), h('div', { class: 'big' }, value), note ? h('div', { class: 'muted' }, note) : null);
  return [
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      card('Nodes up', up + ' / ' + state.nodes.length, state.nodes.length - up ? (state.nodes.length - up) + ' down' : 'all up', '#/nodes'),
      card('Files', files.length, null, '#/files'),
      card('Schedules', allSchedules().length, null, '#/schedules'),
      card('Failing checks', fails.length, fails.map(([n, c]) => nameOf(n) + ': ' + c.name).join(', ') || 'none', '#/nodes'),
      card('Failed jobs', failedJobs.length, failedJobs.map(([g, sc]) => nameOf(g) + ': ' + sc.id).join(', ') || 'none', '#/schedules')),
    h('h2', {}, 'Recent events'),
    state.events.length ? h('ol', { class: 'events' }, state.events.slice(0, 10).map(eventRow)) : h('p', { class: 'muted' }, 'No events yet.'),
  ];
}

function nodeRow(n) {
  const r = n.report;
  const mem = r && r.memory ? Math.round(100 * (1 - r.memory.available / r.memory.total)) + '%' : '—';
  const checks = r ? r.checks : [];
  const failing = checks.filter((c) => c.status === 'failing').length;
  return h('tr', { class: n.up ? 'up' : 'down', 'data-node': nameOf(n), 'data-state': n.up ? 'up' : 'down' },
    h('th', { scope: 'row' }, h('a', { href: '#/nodes/' + encodeURIComponent(nameOf(n)), 'data-key': 'node-' + n.key }, nameOf(n)), n.local ? ' (this node)' : '', conflictBadge(n)),
    h('td', {}, stateBadge(n)),
    h('td', {}, r ? badge(r.status, r.status === 'ok' ? 'ok' : 'warn') : '—'),
    h('td', {}, r ? r.version : '—'),
    h('td', {}, r && n.up ? rel(r.started_at_ms).replace(' ago', '') : '—'),
    h('td', {}, r && r.load ? r.load[0].toFixed(2) : '—'),
    h('td', {}, mem),
    h('td', {}, r && r.disk ? bytes(r.disk.free) + ' free' : '—'),
    h('td', {}, checks.length ? (failing ? badge(failing + ' failing', 'bad') : badge(checks.length + ' ok', 'ok')) : '—'),
    h('td', {}, ago(n.report_age_secs)));
}

function edgeColor(e) {
  if (!e || !e.reachable || e.state !== 'alive') return 'var(--bad)';
  if (e.rtt_ms === null || e.rtt_ms === undefined) return 'var(--gone)';
  if (e.rtt_ms < 20) return 'var(--ok)';
  if (e.rtt_ms < 100) return 'var(--warn)';
  return 'var(--bad)';
}

function graph() {
  const nodes = state.graph.nodes.slice().sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
  const W = 640; const H = 420; const R = Math.min(W, H) / 2 - 60;
  const pos = new Map();
  nodes.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(nodes.length, 1);
    pos.set(n.key, nodes.length === 1 ? [W / 2, H / 2] : [W / 2 + R * Math.cos(a), H / 2 + R * Math.sin(a)]);
  });
  const byPair = new Map();
  for (const e of state.graph.edges) {
    const k = [e.from, e.to].sort().join('|');
    if (!byPair.has(k)) byPair.set(k, []);
    byPair.get(k).push(e);
  }
  const names = new Map(nodes.map((n) => [n.key, nameOf(n)]));
  const lines = [];
  for (const [k, es] of byPair) {
    const [a, b] = k.split('|');
    if (!pos.has(a) || !pos.has(b)) continue;
    const bad = es.find((e) => !e.reachable || e.state !== 'alive');
    const worst = bad || es.reduce((x, y) => ((y.rtt_ms || 0) > (x.rtt_ms || 0) ? y : x));
    const [x1, y1] = pos.get(a); const [x2, y2] = pos.get(b);
    const label = es.map((e) => names.get(e.from) + ' → ' + names.get(e.to) + ': ' + (e.reachable ? e.state : 'unreachable') + (e.rtt_ms !== null && e.rtt_ms !== undefined ? ', ' + e.rtt_ms.toFixed(2) + ' ms' : '')).join('; ');
    lines.push(s('line', { class: 'edge', x1, y1, x2, y2, stroke: edgeColor(worst), 'stroke-width': 3, 'stroke-dasharray': bad ? '6 4' : null, 'data-state': bad ? (bad.reachable ? bad.state : 'unreachable') : 'alive' }, s('title', {}, label)));
  }
  const circles = nodes.map((n) => {
    const [x, y] = pos.get(n.key);
    const go = () => { location.hash = '#/nodes/' + encodeURIComponent(nameOf(n)); };
    return s('g', { class: 'node ' + (n.up ? 'up' : 'down'), 'data-node': nameOf(n), tabindex: 0, role: 'link', 'aria-label': nameOf(n) + (n.up ? ', up' : ', down'), onclick: go, onkeydown: (ev) => { if (ev.key === 'Enter') go(); } },
      s('circle', { cx: x, cy: y, r: 18 }),
      s('text', { x, y: y + 36, 'text-anchor': 'middle' }, nameOf(n) + (n.up ? '' : ' (down)')));
  });
  return h('div', { class: 'graph-wrap' },
    h('div', { class: 'legend', 'aria-hidden': 'true' },
      h('span', {}, h('i', { style: 'background:var(--ok)' }), '< 20 ms'),
      h('span', {}, h('i', { style: 'background:var(--warn)' }), '20–100 ms'),
      h('span', {}, h('i', { style: 'background:var(--bad)' }), '> 100 ms, unreachable or not alive')),
    s('svg', { class: 'graph', viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Who reaches whom: ' + nodes.length + ' nodes, ' + lines.length + ' links' }, lines, circles));
}

function nodesPage() {
  return [
    h('h1', {}, 'Nodes'),
    table(['Node', 'State', 'Health', 'Version', 'Uptime', 'Load', 'Memory', 'Disk', 'Checks', 'Report'], state.nodes.map(nodeRow), { id: 'nodes-table' }),
    h('h2', {}, 'Network'),
    graph(),
  ];
}

function nodeDetail(name) {
  const n = state.nodes.find((x) => nameOf(x) === name || x.key === name);
  if (!n) return [h('h1', {}, name), h('p', {}, 'No such node in this node\'s view. ', h('a', { href: '#/nodes' }, 'All nodes'))];
  const r = n.report;
  const names = new Map(state.nodes.map((x) => [x.key, nameOf(x)]));
  const peers = state.graph.edges.filter((e) => e.from === n.key);
  const group = state.schedules ? state.schedules.nodes.find((g) => g.key === n.key) : null;
  return [
    h('p', {}, h('a', { href: '#/nodes' }, '← All nodes')),
    h('h1', {}, nameOf(n), ' ', stateBadge(n)),
    n.name_conflict ? h('div', { class: 'banner warn', role: 'note' }, 'This node claims the name ' + n.name_conflict + ', which another key holds; it is shown under its own key.') : null,
    n.up ? null : h('div', { class: 'banner warn', role: 'note' }, 'This node is down; what follows is its last report (' + ago(n.report_age_secs) + ').'),
    h('dl', { class: 'kv' },
      h('dt', {}, 'Key'), h('dd', { class: 'mono' }, n.key),
      h('dt', {}, 'Address'), h('dd', {}, n.addr || '—'),
      h('dt', {}, 'Health'), h('dd', {}, r ? r.status : '—'),
      h('dt', {}, 'Version'), h('dd', {}, r ? r.version : '—'),
      h('dt', {}, 'Started'), h('dd', {}, r ? abs(r.started_at_ms) : '—'),
      h('dt', {}, 'Load'), h('dd', {}, r && r.load ? r.load.map((x) => x.toFixed(2)).join(' ') : '—'),
      h('dt', {}, 'Memory'), h('dd', {}, r && r.memory ? bytes(r.memory.available) + ' available of ' + bytes(r.memory.total) + ', agent ' + bytes(r.memory.agent_rss) : '—'),
      h('dt', {}, 'Disk (state dir)'), h('dd', {}, r && r.disk ? bytes(r.disk.free) + ' free of ' + bytes(r.disk.total) : '—'),
      h('dt', {}, 'Report'), h('dd', {}, ago(n.report_age_secs))),
    h('h2', {}, 'Checks'),
    r && r.checks.length ? table(['Check', 'Type', 'Group', 'Status', 'Latency', 'Since', 'Error'], r.checks.map((c) => h('tr', {},
      h('th', { scope: 'row' }, c.name), h('td', {}, c.kind), h('td', {}, c.group || '—'),
      h('td', {}, badge(c.status, c.status === 'ok' ? 'ok' : c.status === 'failing' ? 'bad' : 'gone')),
      h('td', {}, c.latency_ms !== null && c.latency_ms !== undefined ? c.latency_ms + ' ms' : '—'),
      h('td', {}, c.since_ms ? time(c.since_ms) : '—'), h('td', {}, c.error || '')))) : h('p', { class: 'muted' }, 'No checks configured.'),
    h('h2', {}, 'Links'),
    h('p', { class: 'muted' }, n.local ? 'Open connections of this node, live.' : 'A sample of its connections and any link that failed, as of its last report.'),
    peers.length ? table(['Peer', 'State', 'RTT'], peers.map((e) => h('tr', {},
      h('th', { scope: 'row' }, names.get(e.to) || e.to.slice(0, 10)), h('td', {}, e.reachable ? e.state : badge('unreachable', 'bad')),
      h('td', {}, e.rtt_ms !== null && e.rtt_ms !== undefined ? e.rtt_ms.toFixed(2) + ' ms' : '—')))) : h('p', { class: 'muted' }, 'No links reported.'),
    h('h2', {}, 'Files'),
    n.files && n.files.length ? h('ul', {}, n.files.map((f) => h('li', {}, f.name, ' ', f.current ? badge('current', 'ok') : badge('older version', 'warn')))) : h('p', { class: 'muted' }, 'No files reported.'),
    h('h2', {}, 'Schedules'),
    group && group.schedules.length ? h('div', { class: 'sched-grid' }, group.schedules.map((sc) => scheduleCard(group, sc))) : h('p', { class: 'muted' }, 'No schedules.'),
  ];
}

async function showLog(job) {
  const dlg = document.getElementById('dialog');
  document.getElementById('dialog-title').textContent = 'Job ' + job.id + ' — ' + job.schedule;
  const body = document.getElementById('dialog-body');
  body.replaceChildren(h('p', { class: 'muted' }, 'Fetching the log from ' + (job.node_name || 'its node') + '…'));
  if (!dlg.open) dlg.showModal();
  try {
    const log = await api('/api/jobs/' + encodeURIComponent(job.id) + '/log');
    body.replaceChildren(...[
      h('p', {}, jobBadge(log.job.status), ' started ', abs(log.job.started_ms), ', ', log.job.duration_secs.toFixed(1), ' s',
        log.job.exit_code !== null && log.job.exit_code !== undefined ? ', exit code ' + log.job.exit_code : '', log.job.error ? ' — ' + log.job.error : ''),
      log.truncated ? h('p', { class: 'muted' }, 'Only the last ' + bytes(log.log.length) + ' of ' + bytes(log.output_bytes) + ' are kept.') : null,
      h('pre', { class: 'log', tabindex: 0 }, log.log || '(no output)')].filter(Boolean));
  } catch (e) {
    body.replaceChildren(h('div', { class: 'banner bad', role: 'alert' }, 'Could not get the log: ' + e.message));
  }
}

async function runNow(sc, button) {
  button.disabled = true;
  try {
    const r = await api('/api/schedules/' + encodeURIComponent(sc.id) + '/run', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
    state.flash = { kind: 'ok', text: 'Started job ' + r.job + ' of ' + sc.id + '.' };
  } catch (e) {
    // With [http] token_file set, changes need the token, which this page does not hold.
    const hint = e.status === 401 ? ' This agent requires a token for changes: run it with `shoal run ' + sc.id + ' --token-file PATH`.' : '';
    state.flash = { kind: 'bad', text: 'Could not run ' + sc.id + ': ' + e.message + hint };
  }
  refreshSoon();
}

function scheduleCard(group, sc) {
  const last = sc.last;
  return h('article', { class: 'card sched', 'data-schedule': sc.id, 'aria-labelledby': 'sc-' + group.key.slice(0, 8) + '-' + sc.id },
    h('h3', { id: 'sc-' + group.key.slice(0, 8) + '-' + sc.id }, sc.id),
    sc.description ? h('div', { class: 'muted' }, sc.description) : null,
    h('dl', { class: 'kv' },
      h('dt', {}, 'Schedule'), h('dd', { class: 'mono' }, sc.schedule + (sc.timezone !== 'local' ? ' (' + sc.timezone + ')' : '')),
      h('dt', {}, 'Next run'), h('dd', {}, sc.next_run_ms ? [time(sc.next_run_ms), ' ', h('span', { class: 'muted' }, abs(sc.next_run_ms))] : '—'),
      h('dt', {}, 'Last'), h('dd', {}, last ? [jobBadge(last.status), ' ', time(last.ended_ms || last.started_ms)] : 'never run'),
      sc.repository ? [h('dt', {}, 'Repository'), h('dd', { class: 'mono' }, sc.repository)] : null,
      sc.retention ? [h('dt', {}, 'Retention'), h('dd', {}, sc.retention)] : null,
      sc.targets.length ? [h('dt', {}, 'Targets'), h('dd', {}, sc.targets.join(', '))] : null,
      h('dt', {}, 'Command'), h('dd', { class: 'mono' }, sc.command.join(' '))),
    sc.recent.length ? h('details', {}, h('summary', {}, 'Latest jobs (' + sc.recent.length + ')'),
      h('ul', { class: 'jobs' }, sc.recent.map((j) => h('li', { 'data-job': j.id },
        jobBadge(j.status), time(j.started_ms), h('span', { class: 'muted' }, j.duration_secs.toFixed(1) + ' s'),
        j.status === 'skipped' ? null : h('button', { type: 'button', class: 'link', 'data-key': 'log-' + j.id, onclick: () => showLog(j) }, 'log'))))) : null,
    group.local ? h('p', {}, h('button', { type: 'button', class: 'primary', 'data-key': 'run-' + sc.id, disabled: sc.running ? true : null, onclick: (ev) => runNow(sc, ev.currentTarget) }, sc.running ? 'Running…' : 'Run now')) : null);
}

function schedulesPage() {
  const list = state.schedules;
  if (!list) return [h('h1', {}, 'Schedules'), h('p', { class: 'muted' }, 'Loading…')];
  return [
    h('h1', {}, 'Schedules'),
    h('p', { id: 'mesh-count' }, 'Mesh: ' + list.mesh_nodes + ' node' + (list.mesh_nodes === 1 ? '' : 's')),
    list.nodes.map((g) => h('section', { class: 'group', 'data-node': nameOf(g), 'aria-labelledby': 'g-' + g.key.slice(0, 8) },
      h('div', { class: 'group-head' },
        h('h2', { id: 'g-' + g.key.slice(0, 8) }, nameOf(g)),
        h('span', { class: 'count' }, g.count + ' schedule' + (g.count === 1 ? '' : 's')),
        g.up ? null : badge('down: last known', 'bad'),
        h('span', { class: 'muted' }, 'record ' + ago(g.record_age_secs))),
      g.schedules.length ? h('div', { class: 'sched-grid' }, g.schedules.map((sc) => scheduleCard(g, sc))) : h('p', { class: 'muted' }, 'No schedules on this node.'))),
  ];
}

function filesPage() {
  const f = state.files;
  if (!f) return [h('h1', {}, 'Files'), h('p', { class: 'muted' }, 'Loading…')];
  const names = new Map(state.nodes.map((n) => [n.key, nameOf(n)]));
  return [
    h('h1', {}, 'Files'),
    f.files.length ? table(['Name', 'Version', 'Signer', 'Size', 'blake3', 'Updated', 'Present on'], f.files.map((x) => h('tr', { 'data-file': x.name },
      h('th', { scope: 'row' }, h('a', { href: '/api/files/' + encodeURIComponent(x.name) + '/content' }, x.name), x.deleted ? ' ' : '', x.deleted ? badge('deleted', 'gone') : null),
      h('td', { class: 'mono' }, x.version),
      h('td', { class: 'mono', title: x.signer }, names.get(x.signer) || x.signer.slice(0, 10)),
      h('td', {}, bytes(x.size)),
      h('td', { class: 'mono', title: x.hash }, x.hash.slice(0, 12)),
      h('td', {}, time(Date.parse(x.updated))),
      h('td', { class: 'present' }, x.deleted ? '—' : badge(x.present_on + ' / ' + f.nodes_alive + ' nodes', x.present_on >= f.nodes_alive ? 'ok' : 'warn'))))) : h('p', { class: 'muted' }, 'No files yet. Upload one with shoal file update.'),
    h('p', { class: 'muted' }, 'Accepted names: ' + (f.configured.join(', ') || 'none (see [files] in the config)')),
  ];
}

function eventsPage() {
  return [
    h('h1', {}, 'Events ', state.live ? badge('live', 'ok') : badge('reconnecting', 'warn')),
    state.events.length ? h('ol', { class: 'events', 'aria-live': 'polite' }, state.events.map(eventRow)) : h('p', { class: 'muted' }, 'No events yet.'),
  ];
}

// ---- rendering -----------------------------------------------------------------------------

function renderConn() {
  const c = document.getElementById('conn');
  if (state.error) c.replaceChildren(badge('agent not answering', 'bad'));
  else c.replaceChildren(state.live ? badge('live', 'ok') : badge('polling', 'warn'), ' ', h('span', { class: 'muted' }, 'updated ' + new Date(state.lastOk).toLocaleTimeString()));
  if (state.health) document.getElementById('self').textContent = 'on ' + state.health.name;
}

function render() {
  const { page, arg } = route();
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  renderConn();
  const main = document.getElementById('main');
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  const body = page === 'nodes' ? (arg ? nodeDetail(arg) : nodesPage())
    : page === 'schedules' ? schedulesPage()
      : page === 'files' ? filesPage()
        : page === 'events' ? eventsPage()
          : overview();
  const banners = [];
  if (state.error) {
    banners.push(h('div', { class: 'banner bad', role: 'alert' }, 'This node\'s agent is not answering (' + state.error + ').' + (state.lastOk ? ' Showing what it said at ' + new Date(state.lastOk).toLocaleTimeString() + '.' : '')));
  }
  if (state.flash) banners.push(h('div', { class: 'banner ' + (state.flash.kind === 'ok' ? 'warn' : 'bad'), role: 'status' }, state.flash.text));
  // Keep open <details> open across refreshes.
  const open = new Set([...main.querySelectorAll('details[open]')].map((d) => d.parentElement && d.parentElement.dataset.schedule));
  main.replaceChildren(...banners, ...[body].flat(3).filter(Boolean));
  for (const d of main.querySelectorAll('details')) if (open.has(d.parentElement.dataset.schedule)) d.open = true;
  if (focused) {
    const el = main.querySelector('[data-key="' + CSS.escape(focused) + '"]');
    if (el) el.focus();
  }
  document.title = 'shoal — ' + page;
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('dialog-close').addEventListener('click', () => document.getElementById('dialog').close());
  window.addEventListener('hashchange', () => { state.flash = null; render(); document.getElementById('main').focus({ preventScroll: true }); });
  listen();
  refresh();
  loadEvents();
  setInterval(refresh, POLL_MS);
});
