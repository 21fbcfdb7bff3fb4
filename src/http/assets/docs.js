// Renders /api/openapi.json: every operation with its parameters and responses, then every
// schema. Plain DOM, text only.
'use strict';

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return el;
}

function typeOf(s) {
  if (!s) return '';
  if (s.$ref) { const n = s.$ref.split('/').pop(); return h('a', { href: '#schema-' + n }, n); }
  if (s.type === 'array') return ['array of ', typeOf(s.items)];
  if (s.oneOf) return s.oneOf.map((x, i) => [i ? ' | ' : '', typeOf(x)]);
  if (s.enum) return s.enum.map((x) => JSON.stringify(x)).join(' | ');
  const t = Array.isArray(s.type) ? s.type.join(' | ') : (s.type || 'object');
  return s.format ? t + ' (' + s.format + ')' : t;
}

function content(c) {
  return Object.entries(c || {}).map(([type, m]) => h('div', {}, h('code', {}, type), ' ', typeOf(m.schema)));
}

function operation(path, method, op) {
  return h('section', { class: 'card', id: (method + path).replace(/[^a-z0-9]+/gi, '-') },
    h('h3', { class: 'mono' }, method.toUpperCase() + ' ' + path),
    op.description ? h('p', {}, op.description) : null,
    op.parameters && op.parameters.length ? h('dl', { class: 'kv' }, op.parameters.map((p) => [
      h('dt', {}, p.name + ' (' + p.in + (p.required ? ', required' : '') + ')'),
      h('dd', {}, typeOf(p.schema), p.description ? ' — ' + p.description : '')])) : null,
    op.requestBody ? h('div', {}, h('strong', {}, 'Body: '), op.requestBody.description || '', content(op.requestBody.content)) : null,
    h('ul', {}, Object.entries(op.responses || {}).map(([code, r]) => h('li', {}, h('strong', {}, code), ' ', r.description || '', content(r.content)))));
}

function schema(name, s) {
  const props = Object.entries(s.properties || {});
  const required = new Set(s.required || []);
  return h('section', { class: 'card', id: 'schema-' + name },
    h('h3', {}, name),
    s.description ? h('p', {}, s.description) : null,
    props.length ? h('dl', { class: 'kv' }, props.map(([k, v]) => [
      h('dt', { class: 'mono' }, k + (required.has(k) ? '' : '?')),
      h('dd', {}, typeOf(v), v.description ? ' — ' + v.description : '')])) : h('p', {}, typeOf(s)));
}

document.addEventListener('DOMContentLoaded', async () => {
  const main = document.getElementById('main');
  try {
    const doc = await (await fetch('/api/openapi.json')).json();
    const ops = [];
    for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) ops.push(operation(path, method, op));
    const schemas = Object.entries((doc.components || {}).schemas || {}).map(([n, s]) => schema(n, s));
    main.replaceChildren(
      h('h1', {}, doc.info.title + ' ', h('span', { class: 'muted' }, doc.info.version)),
      h('p', {}, doc.info.description || ''),
      h('h2', {}, 'Operations'), h('div', { class: 'sched-grid', style: 'grid-template-columns:1fr' }, ops),
      h('h2', {}, 'Schemas'), h('div', { class: 'sched-grid' }, schemas));
  } catch (e) {
    main.replaceChildren(h('div', { class: 'banner bad', role: 'alert' }, 'Could not load the OpenAPI document: ' + e.message));
  }
});
