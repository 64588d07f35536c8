// The portal side: the plugin API object and the user's token.
//
// The host page lives in a hidden iframe of the Administration Portal; every
// place, detail tab and dialog is another iframe of the same origin. Each of
// them reaches the API through the window that defines `pluginApi` (the
// portal's top window) — `pluginApi(name)` gives a fresh API object bound to
// this plugin by name, so place pages may use the accessors (ssoToken,
// configObject, …) and UI functions, but only the host page calls
// register()/ready().

export const PLUGIN = 'ovault';

export function pluginApi() {
  let w = window;
  for (let i = 0; i < 8 && w; i++) {
    try {
      if (w !== window && typeof w.pluginApi === 'function') return w.pluginApi(PLUGIN);
    } catch (e) { /* cross-origin ancestor: keep climbing */ }
    if (w === w.parent) break;
    w = w.parent;
  }
  return null;
}

// The user's SSO token (oVirt 4.x `ssoToken()`): the orchestrator validates it
// with the engine. Test harnesses and non-portal hosts provide theirs the same way.
export function token(api = pluginApi()) {
  try { return (api && api.ssoToken()) || ''; } catch (e) { return ''; }
}

export function userName(api = pluginApi()) {
  try { return (api && api.loginUserName()) || ''; } catch (e) { return ''; }
}

// Ask the host page (hidden iframe) to follow a job and toast when it ends:
// postMessage to the portal window, which forwards it to our MessageReceived
// handler because the host page allows its own origin.
export function watchJob(job, label) {
  const top = window.top;
  try {
    top.postMessage({ ovault: 'watch-job', jobId: job.id, kind: job.kind, label: label || '' },
      window.location.origin);
  } catch (e) { /* not in a portal */ }
}

export function toast(type, msg, api = pluginApi()) {
  try { if (api) api.showToast(type, msg); } catch (e) { /* ignore */ }
}
