// The plugin's buttons on the portal's VMs grid: "Backup now" and "Restore".

import { t } from './messages.js';
import { placeUrl, place } from './places.js';

// Selection events and button callbacks come as one array argument in oVirt
// 4.4+ and as separate entity arguments up to 4.3: `entities()` accepts both.
export function entities(args) {
  if (args.length && Array.isArray(args[0])) return args[0].filter((x) => x && x.id);
  return Array.prototype.filter.call(args, (x) => x && typeof x === 'object' && x.id);
}

async function backupNow(session, vms) {
  if (!session.client || !vms.length) return;
  const names = vms.map((v) => v.name || v.id).join(', ');
  try {
    const r = await session.client.post('api/v1/backups', { vm_ids: vms.map((v) => v.id), mode: 'auto' });
    session.follow(r.job.id, names);
    session.toast('info', t('toast.backupStartedSee', { names }));
  } catch (e) {
    session.toast('danger', t('toast.backupNotStarted', { names, error: e.message }));
  }
}

export const RESTORE_DIALOG = place('restore').token;

function openRestore(api, vm) {
  api.showDialog(t('restore.titleOf', { name: vm.name || '' }).trim(), RESTORE_DIALOG,
    placeUrl('restore', { vm: vm.id, name: vm.name, dialog: RESTORE_DIALOG }), '980px', '660px',
    { buttons: [], closeIconVisible: true, closeOnEscKey: true });
}

export function registerButtons(call, api, session, guard) {
  const operator = () => session.canOperate;
  call('addMenuPlaceActionButton', 'VirtualMachine', t('button.backupNow'), {
    id: 'ovault-backup-now',
    onClick: guard('Backup now', (...args) => { backupNow(session, entities(args)); }),
    isEnabled: guard('Backup now isEnabled', (...args) => operator() && entities(args).length > 0, false),
    isAccessible: guard('Backup now isAccessible', () => operator(), false),
  });
  call('addMenuPlaceActionButton', 'VirtualMachine', t('button.restore'), {
    id: 'ovault-restore',
    onClick: guard('Restore', (...args) => { const v = entities(args); if (v.length === 1) openRestore(api, v[0]); }),
    isEnabled: guard('Restore isEnabled', (...args) => operator() && entities(args).length === 1, false),
    isAccessible: guard('Restore isAccessible', () => operator(), false),
  });
}
