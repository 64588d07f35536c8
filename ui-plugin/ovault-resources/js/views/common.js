// Pieces shared by several views: the backups table and its actions (restore,
// delete, the protected flag), and a VM's protection status label.

import { can } from '../api.js';
import { t } from '../messages.js';
import { h, bytes, when, stateLabel, short, confirmDanger, errorText, emptyState } from '../ui.js';
import { openFileBrowser } from './files.js';
import { openWizard } from './wizard.js';

export function backupTable(ctx, backups, { showVm = true, onChange = () => {} } = {}) {
  if (!backups.length) return emptyState(t('backups.none'), t('backups.noneDetail'));
  const operate = can.operate(ctx.role);
  return h('table', { class: 'ov-table', 'data-table': 'backups' },
    h('thead', {}, h('tr', {},
      showVm ? h('th', {}, t('col.vmShort')) : null, h('th', {}, t('col.created')), h('th', {}, t('col.mode')), h('th', {}, t('col.method')), h('th', {}, t('col.consistency')), h('th', {}, t('col.status')),
      h('th', { class: 'ov-num' }, t('col.size')), h('th', { class: 'ov-num' }, t('col.newData')), h('th', {}, t('col.disks')),
      h('th', {}, t('col.protected')),
      operate ? h('th', { class: 'ov-actions' }, h('span', { class: 'ov-sr' }, t('col.actions'))) : null)),
    h('tbody', {}, backups.map((b) => h('tr', { 'data-backup': b.id },
      showVm ? h('td', {}, h('strong', {}, b.vm_name || short(b.vm_id))) : null,
      h('td', { title: b.created_at, class: 'ov-nowrap' }, when(b.created_at)),
      h('td', {}, b.mode || t('none')),
      h('td', { class: 'ov-muted' }, b.method || t('none')),
      h('td', { 'data-consistency': b.consistency || '' }, consistencyLabel(b.consistency)),
      h('td', {}, stateLabel(b.status), b.damaged ? h('span', { class: 'ov-label ov-red', 'data-damaged': 'true', title: t('backups.damagedHelp') }, t('backups.damaged')) : null,
        b.fallback_reason ? h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, b.fallback_reason) : null),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.size_bytes)),
      h('td', { class: 'ov-num ov-nowrap' }, bytes(b.new_bytes)),
      h('td', {}, (b.disks || []).map((d) => d.alias || short(d.disk_id)).join(', ') || t('none')),
      h('td', { 'data-protected': String(!!b.protected) }, operate && b.status === 'succeeded' ? protectToggle(ctx, b, onChange)
        : (b.protected ? h('span', { class: 'ov-label ov-blue' }, t('backups.protected')) : h('span', { class: 'ov-muted' }, t('none')))),
      operate ? h('td', { class: 'ov-actions' },
        b.status === 'succeeded' ? h('button', { class: 'ov-btn ov-link', 'data-action': 'restore', 'aria-label': t('backups.restoreLabel', { name: b.vm_name, when: when(b.created_at) }),
          onclick: () => openWizard(ctx, { vm: { id: b.vm_id, name: b.vm_name }, backupId: b.id }) }, t('button.restore')) : null,
        b.status === 'succeeded' ? h('button', { class: 'ov-btn ov-link', 'data-action': 'files', 'aria-label': t('files.buttonLabel', { name: b.vm_name, when: when(b.created_at) }),
          onclick: () => openFileBrowser(ctx, b) }, t('files.button')) : null,
        b.status !== 'running' ? h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', 'aria-label': t('backups.deleteLabel', { name: b.vm_name, when: when(b.created_at) }),
          disabled: !!b.protected, title: b.protected ? t('backups.protectedNoDelete') : null,
          onclick: () => deleteBackup(ctx, b, onChange) }, t('action.delete')) : null) : null))));
}

// How consistent the backup's point in time is, as the engine reported it.
function consistencyLabel(c) {
  if (c === 'filesystem') return h('span', { class: 'ov-label ov-green', title: t('backups.filesystemHelp') }, t('backups.filesystem'));
  if (c === 'crash') return h('span', { class: 'ov-label ov-grey', title: t('backups.crashHelp') }, t('backups.crash'));
  return h('span', { class: 'ov-muted' }, t('none'));
}

// The protected flag as a switch (operators): a protected backup is never
// pruned and cannot be deleted until unmarked (PATCH /api/v1/backups/{id}).
function protectToggle(ctx, b, onChange) {
  const label = t('backups.protectLabel', { name: b.vm_name, when: when(b.created_at) });
  const box = h('input', { type: 'checkbox', 'data-action': 'protect', checked: !!b.protected, 'aria-label': label,
    onchange: async () => {
      box.disabled = true;
      try {
        const r = await ctx.client.patch(`api/v1/backups/${b.id}`, { protected: box.checked });
        b.protected = !!r.protected;
        ctx.toast('success', t(b.protected ? 'toast.backupProtected' : 'toast.backupUnprotected', { name: b.vm_name, when: when(b.created_at) }));
        onChange();
      } catch (e) {
        box.checked = !!b.protected;
        ctx.toast('danger', t('toast.protectFailed', { error: errorText(e) }));
      } finally { box.disabled = false; }
    } });
  return h('label', { class: 'ov-check ov-switch', title: t('backups.protectHelp') }, box, t('backups.protected'));
}

const PROTECTION_COLOR = { protected: 'green', at_risk: 'gold', unprotected: 'red', excluded: 'grey' };

// A VM's protection status; `protection` from the API, or for an orchestrator
// without policies, from whether it has a backup.
export function protectionOf(vm) {
  return vm.protection || (vm.protected ? 'protected' : 'unprotected');
}

export function protectionLabel(status) {
  return h('span', { class: `ov-label ov-${PROTECTION_COLOR[status] || 'gold'}`, 'data-protection': status }, t(`protection.${status}`, {}, status));
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
