// Backups: every backup by VM, filtered by VM, status and text; delete and restore.

import { t } from '../messages.js';
import { h, clear, alert, errorText } from '../ui.js';
import { backupTable } from './common.js';

export async function render(ctx) {
  const vmSel = h('select', { class: 'ov-select', id: 'ov-f-vm', 'aria-label': t('col.vm') }, h('option', { value: '' }, t('backups.allVms')));
  const stSel = h('select', { class: 'ov-select', id: 'ov-f-status', 'aria-label': t('col.status') },
    ['', 'succeeded', 'running', 'failed'].map((s) => h('option', { value: s }, s ? t(`state.${s}`) : t('backups.anyStatus'))));
  const text = h('input', { class: 'ov-input', type: 'search', placeholder: t('backups.filterPlaceholder'), 'aria-label': t('backups.filter'), style: { width: '240px' } });
  const count = h('span', { class: 'ov-muted', 'aria-live': 'polite' });
  const body = h('div', { class: 'ov-table-wrap' });
  const more = h('div', { style: { padding: '12px 0' } });
  const note = h('div');
  clear(ctx.root,
    ctx.header(t('place.backups'), t('backups.sub')),
    h('main', { class: 'ov-main' }, note,
      h('div', { class: 'ov-toolbar', role: 'search' }, vmSel, stSel, text,
        h('button', { class: 'ov-btn ov-secondary', onclick: () => load() }, t('action.refresh')), h('span', { class: 'ov-spacer' }), count),
      body, more));

  let items = []; let cursor = null;
  try {
    const vms = await ctx.client.get('api/v1/vms');
    for (const v of vms.items || []) vmSel.append(h('option', { value: v.id }, v.name));
  } catch (e) { clear(note, alert('danger', t('backups.vmsFailed'), errorText(e))); }
  const pre = ctx.params.get('vm');
  if (pre) vmSel.value = pre;

  function show() {
    const q = text.value.trim().toLowerCase();
    const rows = items.filter((b) => b.status !== 'deleted').filter((b) => !q || (b.vm_name || '').toLowerCase().includes(q)
      || (b.disks || []).some((d) => (d.alias || '').toLowerCase().includes(q)));
    clear(body, backupTable(ctx, rows, { onChange: () => load() }));
    count.textContent = t(rows.length === 1 ? 'backups.countOne' : 'backups.count', { n: rows.length }) + (cursor ? t('backups.more') : '');
    clear(more, cursor ? h('button', { class: 'ov-btn ov-secondary', onclick: () => load(true) }, t('action.loadMore')) : null);
  }

  async function load(append = false) {
    const qs = new URLSearchParams({ limit: '50' });
    if (vmSel.value) qs.set('vm_id', vmSel.value);
    if (stSel.value) qs.set('status', stSel.value);
    if (append && cursor) qs.set('cursor', cursor);
    try {
      const r = await ctx.client.get(`api/v1/backups?${qs}`);
      items = append ? items.concat(r.items || []) : (r.items || []);
      cursor = r.next_cursor || null;
      clear(note);
      show();
    } catch (e) {
      clear(note, alert('danger', t('backups.loadFailed'), errorText(e)));
    }
  }
  vmSel.addEventListener('change', () => load());
  stSel.addEventListener('change', () => load());
  text.addEventListener('input', show);
  await load();
}
