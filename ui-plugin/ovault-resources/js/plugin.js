// Plugin host page: registration with the Administration Portal, and nothing
// else — places are declared in places.js, buttons in buttons.js, the session
// (client, role, followed jobs) in session.js.
//
// Lifecycle (oVirt webadmin PluginManager): the portal loads this page in a
// hidden iframe; we register() our handlers once and call ready(); the portal
// then calls UiInit (UI functions work from there on), queued UserLogin, and
// selection events. An exception escaping any handler makes the portal remove
// the plugin, so every handler goes through `guard`.

import { PLUGIN, userName } from './portal.js';
import { PLACES, placeUrl, registerPlaces } from './places.js';
import { registerButtons, entities, RESTORE_DIALOG } from './buttons.js';
import { Session } from './session.js';

const api = parent.pluginApi(PLUGIN);
const session = new Session(api);

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

// Each registration on its own: one call missing on an older portal must not
// take the rest of the plugin down with it.
function call(fn, ...args) {
  try {
    if (typeof api[fn] === 'function') api[fn](...args);
  } catch (e) {
    try { console.error(`ovault: ${fn} failed`, e); } catch (e2) { /* no console */ }
  }
}

const VM_TAB = PLACES.find((p) => p.where === 'vm-tab').token;

api.register({
  UiInit: guard('UiInit', () => {
    call('options', { allowedMessageOrigins: [window.location.origin] });
    registerPlaces(call);
    registerButtons(call, api, session, guard);
    session.start(guard);
  }),
  UserLogin: guard('UserLogin', () => session.start(guard)),
  UserLogout: guard('UserLogout', () => { session.stop(); session.selection = []; }),
  VirtualMachineSelectionChange: guard('VirtualMachineSelectionChange', (...args) => {
    session.selection = entities(args);
    if (session.selection.length === 1) {
      const vm = session.selection[0];
      api.setPlaceContentUrl(VM_TAB, placeUrl('vm', { vm: vm.id, name: vm.name }));
    }
  }),
  MessageReceived: guard('MessageReceived', (data) => {
    if (!data || typeof data !== 'object' || !data.ovault) return;
    if (data.ovault === 'watch-job' && typeof data.jobId === 'string') session.follow(data.jobId, data.label);
    else if (data.ovault === 'reveal' && PLACES.some((p) => p.token === data.place)) api.revealPlace(data.place);
    else if (data.ovault === 'close-dialog') api.closeDialog(RESTORE_DIALOG);
  }),
});
api.ready();

// For diagnostics from the browser console: window.ovault.state (the session: role, followed jobs, …)
window.ovault = { state: session, userName: () => userName(api) };
