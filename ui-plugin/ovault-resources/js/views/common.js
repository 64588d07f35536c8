// Pieces shared by several views: the backups table and its actions.

import { can } from '../api.js';
import { t } from '../messages.js';
import { h, bytes, when, stateLabel, short, confirmDanger, errorText, emptyState } from '../ui.js';
import { openWizard } from './wizard.js';

export function backupTable(ctx, backups, { showVm = true, onChange = () => {} } = {}) {
  if (!backups.length) return emptyState(t('backups.none'), t('backups.noneDetail'));
  const operate = can.operate(ctx.role);
  return h('table', { class: 'ov-table', 'data-table': 'backups' },
    h('thead', {}, h('tr', {},
      showVm ? h('th', {}, t('col.vmShort')) : null, h('th', {}, t('col.created')), h('th', {}, t('col.mode')), h('th', {}, t('col.method')), h('th', {}, t('col.status')),
      h('th', { class: 'ov-num' }, t('col.size')), h('th', { class: 'ov-num' }, t('col.newData')), h('th', {}, t('col.disks')),
      operate ? h('th', { class: 'ov-actions' }, h('span', { class: 'ov-sr' }, t('col.actions'))) : null)),
    h('tbody', {}, backups.map((b) => h('tr', { 'data-backup': b.id },
      showVm ? h('td', {}, h('strong', {}, b.vm_name || short(b.vm_id))) : null,
      h('td', { title: b.created_at, class: 'ov-nowrap' }, when(b.created_at)),
      h('td', {}, b.mode || t('none')),
      h('td', { class: 'ov-muted' }, b.method || t('none')),
      h('td', {}, stateLabel(b.status), b.damaged ? h('span', { class: 'ov-label ov-red', 'data-damaged': 'true', title: t('backups.damagedHelp') }, t('backups.damaged')) : null,
        b.fallback_reason ? h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, b.fallback_reason) : null),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.size_bytes)),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.new_bytes)),
      h('td', {}, (b.disks || []).map((d) => d.alias || short(d.disk_id)).join(', ') || t('none')),
      operate ? h('td', { class: 'ov-actions' },
        b.status === 'succeeded' ? h('button', { class: 'ov-btn ov-link', 'data-action': 'restore', 'aria-label': t('backups.restoreLabel', { name: b.vm_name, when: when(b.created_at) }),
          onclick: () => openWizard(ctx, { vm: { id: b.vm_id, name: b.vm_name }, backupId: b.id }) }, t('button.restore')) : null,
        b.status !== 'running' ? h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', 'aria-label': t('backups.deleteLabel', { name: b.vm_name, when: when(b.created_at) }),
          onclick: () => deleteBackup(ctx, b, onChange) }, t('action.delete')) : null) : null))));
}

export async function deleteBackup(ctx, b, onChange) {
  const ok = await confirmDanger({
    title: t('backups.deleteTitle'),
    message: t('backups.deleteMessage', { name: b.vm_name, when: when(b.created_at) }),
    action: t('backups.deleteAction'),
  });
  if (!ok) return;
  try {
    await ctx.client.del(`api/v1/backups/${b.id}`);
    ctx.toast('success', t('toast.backupDeleted', { name: b.vm_name, when: when(b.created_at) }));
    onChange();
  } catch (e) {
    ctx.toast('danger', t('toast.backupDeleteFailed', { error: errorText(e) }));
  }
}
