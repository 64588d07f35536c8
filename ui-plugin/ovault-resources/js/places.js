// Every place the plugin adds to the portal, in one table: the menu entries
// under "Backup", the VM detail tab and the restore dialog. The host page
// registers them (plugin.js) and the content page loads a place's view module
// from the same table (place.js).
//
// Adding a page is one view module (views/<name>.js exporting `render(ctx)`)
// plus one line here; its strings go to messages.js.
//
//   view      `?view=` of place.html, and the key of the page's title in messages.js (`place.<view>`)
//   token     the portal's history token (unique, stable: links and tests use it)
//   where     'menu' (secondary place under the Backup container), 'vm-tab'
//             (detail tab of a VM), or 'dialog' (opened by a button)
//   load      the view module

import { t } from './messages.js';

export const CONTAINER = 'ovault';

export const PLACES = [
  { view: 'dashboard', token: 'ovault-dashboard', where: 'menu', load: () => import('./views/dashboard.js') },
  { view: 'backups', token: 'ovault-backups', where: 'menu', load: () => import('./views/backups.js') },
  { view: 'jobs', token: 'ovault-jobs', where: 'menu', load: () => import('./views/jobs.js') },
  { view: 'restores', token: 'ovault-restores', where: 'menu', load: () => import('./views/restores.js') },
  { view: 'policies', token: 'ovault-policies', where: 'menu', load: () => import('./views/policies.js') },
  { view: 'targets', token: 'ovault-targets', where: 'menu', load: () => import('./views/targets.js') },
  { view: 'settings', token: 'ovault-settings', where: 'menu', load: () => import('./views/settings.js') },
  { view: 'vm', token: 'ovault-vm-backups', where: 'vm-tab', load: () => import('./views/vm.js') },
  { view: 'restore', token: 'ovault-restore', where: 'dialog', load: () => import('./views/restore-dialog.js') },
];

export const DEFAULT_VIEW = 'dashboard';

export function place(view) {
  return PLACES.find((p) => p.view === view) || null;
}

export function placeUrl(view, params = {}) {
  const u = new URL('place.html', window.location.href);
  u.searchParams.set('view', view);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.searchParams.set(k, v);
  return u.href;
}

// The host page's part: the container and every menu place and tab, each call
// on its own (`call` swallows what an older portal lacks).
export function registerPlaces(call) {
  call('addPrimaryMenuContainer', t('menu.container'), CONTAINER, { priority: 3, icon: 'fa fa-archive' });
  PLACES.filter((p) => p.where === 'menu').forEach((p, i) =>
    call('addSecondaryMenuPlace', CONTAINER, t(`place.${p.view}`), p.token, placeUrl(p.view), { priority: i }));
  for (const p of PLACES.filter((x) => x.where === 'vm-tab')) {
    call('addDetailPlace', 'VirtualMachine', t(`place.${p.view}`), p.token, placeUrl(p.view), { priority: 20 });
  }
}
