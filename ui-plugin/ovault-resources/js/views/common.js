// Pieces shared by several views: the backups table and its actions.

import { can } from '../api.js';
import { h, bytes, when, stateLabel, short, confirmDanger, errorText, emptyState } from '../ui.js';
import { openWizard } from './wizard.js';

export function backupTable(ctx, backups, { showVm = true, onChange = () => {} } = {}) {
  if (!backups.length) return emptyState('No backups', 'Backups appear here once a backup job succeeds.');
  const operate = can.operate(ctx.role);
  return h('table', { class: 'ov-table', 'data-table': 'backups' },
    h('thead', {}, h('tr', {},
      showVm ? h('th', {}, 'VM') : null, h('th', {}, 'Created'), h('th', {}, 'Mode'), h('th', {}, 'Method'), h('th', {}, 'Status'),
      h('th', { class: 'ov-num' }, 'Size'), h('th', { class: 'ov-num' }, 'New data'), h('th', {}, 'Disks'),
      operate ? h('th', { class: 'ov-actions' }, h('span', { class: 'ov-sr' }, 'Actions')) : null)),
    h('tbody', {}, backups.map((b) => h('tr', { 'data-backup': b.id },
      showVm ? h('td', {}, h('strong', {}, b.vm_name || short(b.vm_id))) : null,
      h('td', { title: b.created_at, class: 'ov-nowrap' }, when(b.created_at)),
      h('td', {}, b.mode || '—'),
      h('td', { class: 'ov-muted' }, b.method || '—'),
      h('td', {}, stateLabel(b.status), b.fallback_reason ? h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, b.fallback_reason) : null),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.size_bytes)),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.new_bytes)),
      h('td', {}, (b.disks || []).map((d) => d.alias || short(d.disk_id)).join(', ') || '—'),
      operate ? h('td', { class: 'ov-actions' },
        b.status === 'succeeded' ? h('button', { class: 'ov-btn ov-link', 'data-action': 'restore', 'aria-label': `Restore backup of ${b.vm_name} from ${when(b.created_at)}`,
          onclick: () => openWizard(ctx, { vm: { id: b.vm_id, name: b.vm_name }, backupId: b.id }) }, 'Restore') : null,
        b.status !== 'running' ? h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', 'aria-label': `Delete backup of ${b.vm_name} from ${when(b.created_at)}`,
          onclick: () => deleteBackup(ctx, b, onChange) }, 'Delete') : null) : null))));
}

export async function deleteBackup(ctx, b, onChange) {
  const ok = await confirmDanger({
    title: 'Delete backup?',
    message: `The backup of ${b.vm_name} taken ${when(b.created_at)} will be removed from the backup target. Later incremental backups stay restorable; this one cannot be brought back.`,
    action: 'Delete backup',
  });
  if (!ok) return;
  try {
    await ctx.client.del(`api/v1/backups/${b.id}`);
    ctx.toast('success', `Backup of ${b.vm_name} from ${when(b.created_at)} deleted`);
    onChange();
  } catch (e) {
    ctx.toast('danger', `Could not delete the backup: ${errorText(e)}`);
  }
}
