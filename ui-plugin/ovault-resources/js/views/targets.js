// Targets: backup targets with capacity, usage and deduplication.
// GET /api/v1/targets → {"items":[{"id","name","url","active","created_at",
// "usage":{"stored_bytes","logical_bytes","chunks","backups","dedup_ratio"}|null}]}
// (capacity_bytes/used_bytes are shown when the orchestrator adds them); the
// page says so plainly when the orchestrator does not offer targets at all.

import { t } from '../messages.js';
import { h, clear, bytes, when, alert, emptyState, stateLabel, errorText } from '../ui.js';

export async function render(ctx) {
  const body = h('div', { class: 'ov-grid ov-grid-2' });
  const note = h('div');
  clear(ctx.root, ctx.header(t('targets.title'), t('targets.sub')),
    h('main', { class: 'ov-main' }, note, body));
  let r;
  try { r = await ctx.client.optional('api/v1/targets', null); } catch (e) {
    clear(note, alert('danger', t('targets.loadFailed'), errorText(e))); return;
  }
  if (r === null) {
    clear(body, h('div', { class: 'ov-card', style: { gridColumn: '1 / -1' } }, emptyState(t('targets.unavailable'), t('targets.unavailableDetail'))));
    return;
  }
  const items = r.items || [];
  if (!items.length) { clear(body, h('div', { class: 'ov-card', style: { gridColumn: '1 / -1' } }, emptyState(t('targets.none')))); return; }
  clear(body, items.map((t0) => {
    const x = { ...t0, ...(t0.usage || {}) };
    const cap = x.capacity_bytes || x.size_bytes || 0; const used = x.used_bytes || 0;
    const pct = cap ? Math.round((used / cap) * 100) : null;
    const dedup = x.dedup_ratio || (x.logical_bytes && x.stored_bytes ? x.logical_bytes / x.stored_bytes : null);
    return h('section', { class: 'ov-card', 'data-target': x.id || x.name },
      h('div', { class: 'ov-card-title' }, x.name || x.id, x.active ? stateLabel('succeeded', t('targets.active')) : stateLabel('canceled', t('targets.inactive'))),
      h('div', { class: 'ov-card-body' },
        h('div', { class: 'ov-mono ov-muted' }, x.url || ''),
        !t0.usage && pct === null ? h('p', { class: 'ov-muted' }, t('targets.noStats')) : pct !== null ? [h('div', { class: `ov-usage${pct > 90 ? ' ov-bad' : pct > 75 ? ' ov-warn' : ''}`, role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(pct), 'aria-label': t('targets.usedSpace') },
          h('div', { style: { width: `${pct}%` } })), h('div', {}, t('targets.used', { used: bytes(used), cap: bytes(cap), pct }))] : null,
        h('dl', { class: 'ov-summary', style: { marginTop: '12px' } },
          h('dt', {}, t('targets.protected')), h('dd', {}, bytes(x.logical_bytes)),
          h('dt', {}, t('targets.stored')), h('dd', {}, bytes(x.stored_bytes)),
          h('dt', {}, t('kpi.dedup')), h('dd', {}, dedup ? t('fmt.ratio', { x: Number(dedup).toFixed(1) }) : t('none')),
          x.backups !== undefined ? [h('dt', {}, t('targets.backups')), h('dd', {}, String(x.backups))] : null,
          x.chunks !== undefined ? [h('dt', {}, t('targets.chunks')), h('dd', {}, String(x.chunks))] : null,
          h('dt', {}, t('targets.added')), h('dd', {}, when(x.created_at)))));
  }));
}
