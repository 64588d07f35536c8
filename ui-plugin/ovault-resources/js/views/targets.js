// Targets: backup targets with capacity, usage and deduplication.
// GET /api/v1/targets → {"items":[{"id","name","url","active","created_at",
// "usage":{"stored_bytes","logical_bytes","chunks","backups","dedup_ratio"}|null}]}
// (capacity_bytes/used_bytes are shown when the orchestrator adds them); the
// page says so plainly when the orchestrator does not offer targets at all.

import { h, clear, bytes, when, alert, emptyState, stateLabel, errorText } from '../ui.js';

export async function render(ctx) {
  const body = h('div', { class: 'ov-grid ov-grid-2' });
  const note = h('div');
  clear(ctx.root, ctx.header('Backup targets', 'Where backups are stored (content-addressed, deduplicated)'),
    h('main', { class: 'ov-main' }, note, body));
  let r;
  try { r = await ctx.client.optional('api/v1/targets', null); } catch (e) {
    clear(note, alert('danger', 'Could not load targets', errorText(e))); return;
  }
  if (r === null) {
    clear(body, h('div', { class: 'ov-card', style: { gridColumn: '1 / -1' } }, emptyState('Target statistics are not available',
      'This ovault orchestrator does not report its targets over the API yet. Backups still run; see the target in the orchestrator configuration.')));
    return;
  }
  const items = r.items || [];
  if (!items.length) { clear(body, h('div', { class: 'ov-card', style: { gridColumn: '1 / -1' } }, emptyState('No targets configured'))); return; }
  clear(body, items.map((t0) => {
    const t = { ...t0, ...(t0.usage || {}) };
    const cap = t.capacity_bytes || t.size_bytes || 0; const used = t.used_bytes || 0;
    const pct = cap ? Math.round((used / cap) * 100) : null;
    const dedup = t.dedup_ratio || (t.logical_bytes && t.stored_bytes ? t.logical_bytes / t.stored_bytes : null);
    return h('section', { class: 'ov-card', 'data-target': t.id || t.name },
      h('div', { class: 'ov-card-title' }, t.name || t.id, t.active ? stateLabel('succeeded', 'active') : stateLabel('canceled', 'inactive')),
      h('div', { class: 'ov-card-body' },
        h('div', { class: 'ov-mono ov-muted' }, t.url || ''),
        !t0.usage && pct === null ? h('p', { class: 'ov-muted' }, 'No statistics for this target (only the active target reports them).') : pct !== null ? [h('div', { class: `ov-usage${pct > 90 ? ' ov-bad' : pct > 75 ? ' ov-warn' : ''}`, role: 'meter', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-valuenow': String(pct), 'aria-label': 'Used space' },
          h('div', { style: { width: `${pct}%` } })), h('div', {}, `${bytes(used)} of ${bytes(cap)} used (${pct}%)`)] : null,
        h('dl', { class: 'ov-summary', style: { marginTop: '12px' } },
          h('dt', {}, 'Protected data'), h('dd', {}, bytes(t.logical_bytes)),
          h('dt', {}, 'Stored after dedup'), h('dd', {}, bytes(t.stored_bytes)),
          h('dt', {}, 'Deduplication'), h('dd', {}, dedup ? `${Number(dedup).toFixed(1)}×` : '—'),
          t.backups !== undefined ? [h('dt', {}, 'Backups'), h('dd', {}, String(t.backups))] : null,
          t.chunks !== undefined ? [h('dt', {}, 'Chunks'), h('dd', {}, String(t.chunks))] : null,
          h('dt', {}, 'Added'), h('dd', {}, when(t.created_at)))));
  }));
}
