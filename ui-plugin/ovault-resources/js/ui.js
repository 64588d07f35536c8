// Small DOM toolkit: element builder, formatters, progress bars, job cards,
// modal and confirmation dialogs. No framework: the plugin ships as plain ES
// modules, nothing to build.

import { TERMINAL } from './live.js';
import { t } from './messages.js';

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') Object.assign(el.style, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

// --- formatters ----------------------------------------------------------------
const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
export function bytes(n) {
  if (n === null || n === undefined || isNaN(n)) return t('none');
  let i = 0; let v = Number(n);
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${UNITS[i]}`;
}
export function rate(bps) { return bps ? t('fmt.rate', { bytes: bytes(bps) }) : ''; }
export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '';
  s = Math.max(0, Math.round(s));
  if (s < 60) return t('fmt.seconds', { s });
  if (s < 3600) return t('fmt.minutes', { m: Math.floor(s / 60), s: String(s % 60).padStart(2, '0') });
  return t('fmt.hours', { h: Math.floor(s / 3600), m: String(Math.floor((s % 3600) / 60)).padStart(2, '0') });
}
export function when(iso) {
  if (!iso) return t('none');
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}
export function ago(iso) {
  if (!iso) return '';
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return t('fmt.justNow');
  if (s < 3600) return t('fmt.minAgo', { n: Math.floor(s / 60) });
  if (s < 86400) return t('fmt.hAgo', { n: Math.floor(s / 3600) });
  return t('fmt.dAgo', { n: Math.floor(s / 86400) });
}
export const short = (id) => (id ? String(id).slice(0, 8) : '');

const STATE_LABEL = { queued: 'grey', running: 'blue', succeeded: 'green', failed: 'red', canceled: 'grey',
  deleted: 'grey', up: 'green', down: 'grey' };
export function stateLabel(state, text) {
  return h('span', { class: `ov-label ov-${STATE_LABEL[state] || 'gold'}`, 'data-state': state }, text || (state ? t(`state.${state}`, {}, state) : t('none')));
}

// --- progress ------------------------------------------------------------------
// A bar keeps a stable `data-key`, so live updates patch numbers in place and
// keyboard focus elsewhere on the page survives.
export function progressBar(key, title, { small = false } = {}) {
  const fill = h('div', { class: 'ov-progress-fill' });
  const bar = h('div', { class: 'ov-progress-bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100',
    'aria-valuenow': '0', 'aria-label': title }, fill);
  return h('div', { class: `ov-progress${small ? ' ov-small' : ''}`, 'data-key': key },
    h('div', { class: 'ov-progress-title', title }, title),
    h('div', { class: 'ov-progress-status' }, ''),
    bar,
    h('div', { class: 'ov-progress-meta' }, ''));
}

export function setProgress(el, { done = 0, total = 0, state = 'running', phase = '', rate: r = null, eta = null, error = null }) {
  const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : (state === 'succeeded' ? 100 : 0);
  el.dataset.state = state;
  const bar = el.querySelector('.ov-progress-bar');
  bar.setAttribute('aria-valuenow', String(pct));
  bar.querySelector('.ov-progress-fill').style.width = `${pct}%`;
  const st = state === 'running' ? `${pct}%` : t(`state.${state}`, {}, state);
  el.querySelector('.ov-progress-status').textContent = st;
  const meta = [];
  if (total) meta.push(t('progress.of', { done: bytes(done), total: bytes(total) }));
  if (state === 'running') {
    if (phase && phase !== 'running') meta.push(t(`state.${phase}`, {}, phase));
    if (r) meta.push(rate(r));
    if (eta !== null && eta !== undefined) meta.push(t('progress.left', { duration: duration(eta) }));
  }
  const m = el.querySelector('.ov-progress-meta');
  m.textContent = error ? '' : meta.join(' · ');
  if (error) m.append(h('span', { class: 'ov-error' }, error));
}

// A job with a bar per VM and per disk. `ctx` = {diskNames, onCancel}. Rate and
// ETA are the server's (`rate_bps`, `eta_seconds`); nothing is measured here.
export function jobCard(job, ctx) {
  const card = h('div', { class: 'ov-job', 'data-job': job.id });
  renderJob(card, job, ctx);
  return card;
}

function jobShape(job) {
  return JSON.stringify([job.state, job.cancel_requested, (job.machines || []).map((m) => [m.id, Object.keys(m.disks || {}), !!m.error])]);
}

export function renderJob(card, job, ctx = {}) {
  const shape = jobShape(job);
  if (card.dataset.shape !== shape) {
    card.dataset.shape = shape;
    const names = (job.machines || []).map((m) => m.vm_name || short(m.vm_id)).join(', ');
    let title = t(job.kind === 'restore' ? 'job.restoreTitle' : 'job.backupTitle', { names });
    if (job.kind && job.kind !== 'backup' && job.kind !== 'restore') title = t('job.generic', { kind: t(`kind.${job.kind}`, {}, job.kind) });  // prune, gc
    const cancel = ctx.onCancel && !TERMINAL.has(job.state) && !job.cancel_requested
      ? h('button', { class: 'ov-btn ov-secondary ov-small', 'data-action': 'cancel', onclick: () => ctx.onCancel(job) }, t('action.cancel'))
      : null;
    clear(card,
      h('div', { class: 'ov-job-head' },
        h('span', { class: 'ov-job-title' }, title),
        stateLabel(job.state, job.cancel_requested && !TERMINAL.has(job.state) ? t('state.canceling') : null),
        h('span', { class: 'ov-muted', style: { fontSize: '12px' } }, t('job.meta', { when: when(job.created_at), by: job.created_by || '', id: short(job.id) })),
        h('span', { class: 'ov-spacer' }), cancel),
      (job.machines || []).map((m) => h('div', { class: 'ov-machine', 'data-machine': m.id },
        progressBar(`${job.id}/${m.id}`, m.vm_name || m.vm_id),
        h('div', { class: 'ov-disks' }, Object.keys(m.disks || {}).map((d) =>
          progressBar(`${job.id}/${m.id}/${d}`, (ctx.diskNames && ctx.diskNames[d]) || (m.disks[d] && m.disks[d].alias) || t('job.disk', { id: short(d) }), { small: true }))))),
      job.error ? h('div', { class: 'ov-error' }, job.error) : null);
  }
  for (const m of job.machines || []) {
    const el = card.querySelector(`[data-key="${CSS.escape(`${job.id}/${m.id}`)}"]`);
    const done = m.bytes_done || 0; const total = m.bytes_total || 0;
    const mstate = TERMINAL.has(m.state) ? m.state : (m.state === 'queued' ? 'queued' : 'running');
    if (el) setProgress(el, { done, total, state: mstate, phase: m.state, rate: m.rate_bps, eta: m.eta_seconds, error: m.error });
    for (const [d, p] of Object.entries(m.disks || {})) {
      const del = card.querySelector(`[data-key="${CSS.escape(`${job.id}/${m.id}/${d}`)}"]`);
      const dd = p.done || 0; const dt = p.total || 0;
      const dstate = mstate === 'running' && dt && dd >= dt ? 'succeeded' : mstate;
      if (del) setProgress(del, { done: dd, total: dt, state: dstate, rate: p.rate_bps, eta: p.eta_seconds });
    }
  }
}

// --- alerts, modals ------------------------------------------------------------
export function alert(kind, title, detail) {
  const icon = { danger: '!', warning: '!', success: '✓', info: 'i' }[kind] || 'i';
  return h('div', { class: `ov-alert ov-${kind}`, role: kind === 'danger' ? 'alert' : 'status' },
    h('span', { class: 'ov-alert-icon', 'aria-hidden': 'true' }, icon),
    h('div', {}, h('strong', {}, title), detail ? h('div', {}, detail) : null));
}

export function emptyState(title, detail) {
  return h('div', { class: 'ov-empty' }, h('h3', {}, title), detail ? h('div', {}, detail) : null);
}

// A modal inside this iframe: focus moves into it, Tab cycles, Esc closes,
// focus returns to the opener.
export function modal({ title, body, footer, small = false, onClose }) {
  const opener = document.activeElement;
  const close = () => { backdrop.remove(); document.removeEventListener('keydown', onKey, true); if (onClose) onClose(); if (opener && opener.focus) opener.focus(); };
  const titleId = `ov-m-${Math.random().toString(36).slice(2)}`;
  const dlg = h('div', { class: `ov-modal${small ? ' ov-small' : ''}`, role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': titleId },
    h('div', { class: 'ov-modal-head' }, h('h2', { id: titleId }, title),
      h('button', { class: 'ov-close', 'aria-label': t('action.close'), onclick: close }, '×')),
    h('div', { class: 'ov-modal-body' }, body),
    footer ? h('div', { class: 'ov-modal-foot' }, footer) : null);
  const backdrop = h('div', { class: 'ov-backdrop' }, dlg);
  function onKey(e) {
    if (e.key === 'Escape') { e.preventDefault(); close(); return; }
    if (e.key !== 'Tab') return;
    const f = [...dlg.querySelectorAll('button, [href], input, select, textarea, [tabindex]:not([tabindex="-1"])')].filter((x) => !x.disabled && x.offsetParent);
    if (!f.length) return;
    if (e.shiftKey && document.activeElement === f[0]) { e.preventDefault(); f[f.length - 1].focus(); }
    else if (!e.shiftKey && document.activeElement === f[f.length - 1]) { e.preventDefault(); f[0].focus(); }
  }
  document.addEventListener('keydown', onKey, true);
  document.body.append(backdrop);
  const first = dlg.querySelector('.ov-modal-body input, .ov-modal-body select, .ov-modal-foot button');
  (first || dlg.querySelector('button')).focus();
  return { close, el: dlg };
}

// Confirmation for destructive actions; resolves true only on the danger button.
// With `typeName`, the user must type that name first.
export function confirmDanger({ title, message, action = t('action.delete'), typeName = null }) {
  return new Promise((resolve) => {
    let ok = false;
    const input = typeName ? h('input', { class: 'ov-input', 'aria-label': t('confirm.typeLabel', { name: typeName }), autocomplete: 'off' }) : null;
    const go = h('button', { class: 'ov-btn ov-danger', 'data-action': 'confirm', disabled: !!typeName,
      onclick: () => { ok = true; m.close(); } }, action);
    if (input) input.addEventListener('input', () => { go.disabled = input.value !== typeName; });
    const m = modal({
      title, small: true,
      body: [alert('warning', message), typeName ? h('p', {}, t('confirm.typePrompt', { name: typeName })) : null, input],
      footer: [go, h('button', { class: 'ov-btn ov-link', onclick: () => m.close() }, t('action.cancel'))],
      onClose: () => resolve(ok),
    });
  });
}

export function errorText(e) {
  if (!e) return '';
  if (e.status === 403) return t('error.notAllowed', { error: e.message });
  return e.message || String(e);
}
