// The plugin's configuration: every default in this one place.
//
// The portal hands the plugin its `config`: the descriptor's (ui-plugin/ovault.json,
// which sets none) shallow-merged with the administrator's
// /etc/ovirt-engine/ui-plugins/ovault-config.json. Whatever is not set there
// comes from DEFAULTS (docs/ui-plugin.md lists the keys).

export const DEFAULTS = Object.freeze({
  apiBaseUrl: '/ovault-api/',   // proxied same-origin by the engine's httpd (docs/ui-plugin.md)
  pollIntervalMs: 1000,         // job polling when the websocket is not available
  wsReconnectMaxMs: 30000,      // longest wait between websocket reconnection attempts
});

// Config merged over the defaults, with numbers as numbers.
export function config(api) {
  let c = {};
  try { c = (api && api.configObject()) || {}; } catch (e) { c = {}; }
  const out = { ...DEFAULTS, ...c };
  for (const k of ['pollIntervalMs', 'wsReconnectMaxMs']) out[k] = Number(out[k]) || DEFAULTS[k];
  return out;
}

// The orchestrator's base URL, absolute and ending in '/'.
export function apiBaseUrl(cfg) {
  let base = String(cfg.apiBaseUrl || DEFAULTS.apiBaseUrl);
  if (!base.endsWith('/')) base += '/';
  return new URL(base, window.location.href).href;
}

// Options of the live channel (live.js) from the configuration.
export function liveOptions(cfg) {
  return { pollMs: cfg.pollIntervalMs, reconnectMaxMs: cfg.wsReconnectMaxMs };
}
