// Plugin host page: registration with the Administration Portal.
//
// Lifecycle (oVirt webadmin PluginManager): the portal loads this page in a
// hidden iframe; we register() our handlers once and call ready(); the portal
// then calls UiInit (UI functions work from there on), queued UserLogin, and
// selection events. An exception escaping any handler makes the portal remove
// the plugin, so every handler goes through `guard`.
//
// Selection events and button callbacks come as one array argument in oVirt
// 4.4+ and as separate entity arguments up to 4.3: `entities()` accepts both.

import { PLUGIN, config, apiBaseUrl, token, userName } from './portal.js';
import { Client, can } from './api.js';
import { Live, TERMINAL } from './live.js';

const api = parent.pluginApi(PLUGIN);
const CONTAINER = 'ovault';
const T = {
  dashboard: 'ovault-dashboard', backups: 'ovault-backups', jobs: 'ovault-jobs', restores: 'ovault-restores',
  targets: 'ovault-targets', settings: 'ovault-settings', vm: 'ovault-vm-backups',
};
const RESTORE_DIALOG = 'ovault-restore';

const state = { selection: [], role: null, client: null, live: null, followed: new Map(), session: 0 };

export function placeUrl(view, params = {}) {
  const u = new URL('place.html', window.location.href);
  u.searchParams.set('view', view);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.set(k, v);
  return u.href;
}

function guard(name, fn, fallback) {
  return function guarded(...args) {
    try {
      return fn.apply(this, args);
    } catch (e) {
      try { console.error(`ovault: ${name} failed`, e); } catch (e2) { /* no console */ }
      return fallback;
    }
  };
}

export function entities(args) {
  if (args.length && Array.isArray(args[0])) return args[0].filter((x) => x && x.id);
  return Array.prototype.filter.call(args, (x) => x && typeof x === 'object' && x.id);
}

function toast(type, msg) { try { api.showToast(type, msg); } catch (e) { /* ignore */ } }

// --- session: client, role, live updates ------------------------------------------
function startSession() {
  stopSession();
  if (!token(api)) return;              // not logged in yet: UserLogin will start it
  const cfg = config(api);
  const session = ++state.session;
  state.client = new Client(apiBaseUrl(cfg), () => token(api));
  state.live = new Live(state.client, { pollMs: Number(cfg.pollIntervalMs) || 1000, reconnectMaxMs: Number(cfg.wsReconnectMaxMs) || 30000 });
  state.live.onJob(guard('job update', onJobUpdate));
  state.live.start();
  state.client.role().then((role) => { if (session === state.session) state.role = role; }, () => {});
}

function stopSession() {
  if (state.live) state.live.stop();
  state.live = null; state.client = null; state.role = null;
  state.followed.clear();
}

function follow(jobId, label) {
  if (!state.live || !jobId) return;
  state.followed.set(jobId, label || state.followed.get(jobId) || '');
  state.live.watch(jobId);
}

function onJobUpdate(job) {
  if (!state.followed.has(job.id) || !TERMINAL.has(job.state)) return;
  const label = state.followed.get(job.id) || `${job.kind} job`;
  state.followed.delete(job.id);
  const names = (job.machines || []).map((m) => m.vm_name).filter(Boolean).join(', ');
  const what = `${job.kind === 'restore' ? 'Restore' : 'Backup'} of ${names || label}`;
  if (job.state === 'succeeded') toast('success', `${what} succeeded`);
  else if (job.state === 'canceled') toast('warning', `${what} was canceled`);
  else {
    const err = job.error || (job.machines || []).map((m) => m.error).filter(Boolean)[0] || '';
    toast('danger', `${what} failed${err ? `: ${err}` : ''}`);
  }
}

// --- actions on the VMs grid -------------------------------------------------------
async function backupNow(vms) {
  if (!state.client || !vms.length) return;
  const names = vms.map((v) => v.name || v.id).join(', ');
  try {
    const r = await state.client.post('api/v1/backups', { vm_ids: vms.map((v) => v.id), mode: 'auto' });
    follow(r.job.id, names);
    toast('info', `Backup of ${names} started (Backup › Jobs shows its progress)`);
  } catch (e) {
    toast('danger', `Backup of ${names} could not start: ${e.message}`);
  }
}

function openRestore(vm) {
  api.showDialog(`Restore ${vm.name || ''}`.trim(), RESTORE_DIALOG,
    placeUrl('restore', { vm: vm.id, name: vm.name, dialog: RESTORE_DIALOG }), '980px', '660px',
    { buttons: [], closeIconVisible: true, closeOnEscKey: true });
}

const operator = () => can.operate(state.role);

// --- handlers ------------------------------------------------------------------------
// Each registration on its own: one call missing on an older portal must not
// take the rest of the plugin down with it.
function call(fn, ...args) {
  try {
    if (typeof api[fn] === 'function') api[fn](...args);
  } catch (e) {
    try { console.error(`ovault: ${fn} failed`, e); } catch (e2) { /* no console */ }
  }
}

function uiInit() {
  call('options', { allowedMessageOrigins: [window.location.origin] });
  call('addPrimaryMenuContainer', 'Backup', CONTAINER, { priority: 3, icon: 'fa fa-archive' });
  const places = [
    ['Dashboard', T.dashboard, 'dashboard'], ['Backups', T.backups, 'backups'], ['Jobs', T.jobs, 'jobs'],
    ['Restores', T.restores, 'restores'], ['Targets', T.targets, 'targets'], ['Webhooks & Settings', T.settings, 'settings'],
  ];
  places.forEach(([label, tok, view], i) => call('addSecondaryMenuPlace', CONTAINER, label, tok, placeUrl(view), { priority: i }));
  call('addDetailPlace', 'VirtualMachine', 'Backups', T.vm, placeUrl('vm'), { priority: 20 });

  call('addMenuPlaceActionButton', 'VirtualMachine', 'Backup now', {
    id: 'ovault-backup-now',
    onClick: guard('Backup now', (...args) => { backupNow(entities(args)); }),
    isEnabled: guard('Backup now isEnabled', (...args) => operator() && entities(args).length > 0, false),
    isAccessible: guard('Backup now isAccessible', () => operator(), false),
  });
  call('addMenuPlaceActionButton', 'VirtualMachine', 'Restore', {
    id: 'ovault-restore',
    onClick: guard('Restore', (...args) => { const v = entities(args); if (v.length === 1) openRestore(v[0]); }),
    isEnabled: guard('Restore isEnabled', (...args) => operator() && entities(args).length === 1, false),
    isAccessible: guard('Restore isAccessible', () => operator(), false),
  });
  startSession();
}

function userLogin() { startSession(); }

function userLogout() {
  stopSession();
  state.selection = [];
}

function vmSelection(...args) {
  state.selection = entities(args);
  if (state.selection.length === 1) {
    const vm = state.selection[0];
    api.setPlaceContentUrl(T.vm, placeUrl('vm', { vm: vm.id, name: vm.name }));
  }
}

function messageReceived(data) {
  if (!data || typeof data !== 'object' || !data.ovault) return;
  if (data.ovault === 'watch-job' && typeof data.jobId === 'string') follow(data.jobId, data.label);
  else if (data.ovault === 'reveal' && Object.values(T).includes(data.place)) api.revealPlace(data.place);
  else if (data.ovault === 'close-dialog') api.closeDialog(RESTORE_DIALOG);
}

api.register({
  UiInit: guard('UiInit', uiInit),
  UserLogin: guard('UserLogin', userLogin),
  UserLogout: guard('UserLogout', userLogout),
  VirtualMachineSelectionChange: guard('VirtualMachineSelectionChange', vmSelection),
  MessageReceived: guard('MessageReceived', messageReceived),
});
api.ready();

// For diagnostics from the browser console: window.ovault.state
window.ovault = { state, userName: () => userName(api) };
