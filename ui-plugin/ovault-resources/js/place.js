// Content pages (places, the VM detail tab, the restore dialog): one page,
// the view chosen by `?view=`. Each view module exports `render(ctx)`.

import { pluginApi, config, apiBaseUrl, token, userName, watchJob, toast } from './portal.js';
import { Client } from './api.js';
import { Live, Rates } from './live.js';
import { h, clear, alert } from './ui.js';

const VIEWS = {
  dashboard: () => import('./views/dashboard.js'),
  backups: () => import('./views/backups.js'),
  jobs: () => import('./views/jobs.js'),
  restores: () => import('./views/restores.js'),
  targets: () => import('./views/targets.js'),
  settings: () => import('./views/settings.js'),
  vm: () => import('./views/vm.js'),
  restore: () => import('./views/restore-dialog.js'),
};

async function main() {
  const root = document.getElementById('app');
  const params = new URLSearchParams(window.location.search);
  const view = params.get('view') || 'dashboard';
  const api = pluginApi();
  const cfg = config(api);
  const client = new Client(apiBaseUrl(cfg), () => token(api));
  let live = null;
  const ctx = {
    api, cfg, client, params, view, root, rates: new Rates(),
    user: userName(api),
    role: 'viewer',
    toast: (type, msg) => toast(type, msg, api),
    watchJob,
    // One live channel per page, opened by the first view that needs it.
    live() {
      if (!live) {
        live = new Live(client, { pollMs: Number(cfg.pollIntervalMs) || 1000, reconnectMaxMs: Number(cfg.wsReconnectMaxMs) || 30000 });
        live.start();
      }
      return live;
    },
    // Page header with the live-channel indicator.
    header(title, sub, ...actions) {
      const ind = h('span', { class: 'ov-live', 'data-mode': 'connecting', 'aria-live': 'polite' }, 'connecting');
      if (live || ctx._wantsLive) {
        ctx.live().onStatus((m) => {
          ind.dataset.mode = m;
          ind.textContent = { websocket: 'live', polling: 'live (polling)', offline: 'offline', connecting: 'connecting' }[m] || m;
        });
      }
      return h('header', { class: 'ov-header' },
        h('div', {}, h('h1', {}, title), sub ? h('div', { class: 'ov-sub' }, sub) : null),
        h('span', { class: 'ov-spacer' }),
        live || ctx._wantsLive ? ind : null,
        actions);
    },
    reveal(place) { try { window.top.postMessage({ ovault: 'reveal', place }, window.location.origin); } catch (e) { /* */ } },
  };
  window.addEventListener('pagehide', () => { if (live) live.stop(); });
  if (!token(api)) {
    clear(root, h('main', { class: 'ov-main' }, alert('warning', 'Not signed in', 'Sign in to the Administration Portal to use ovault.')));
    return;
  }
  try {
    ctx.role = await client.role();
    document.body.dataset.role = ctx.role;
    const mod = await (VIEWS[view] || VIEWS.dashboard)();
    await mod.render(ctx);
  } catch (e) {
    console.error(e);
    clear(root, h('main', { class: 'ov-main' }, alert('danger', 'ovault is not reachable', `${e.message || e}. Check the plugin's apiBaseUrl (${cfg.apiBaseUrl}) and that the orchestrator is running.`)));
  } finally {
    root.setAttribute('aria-busy', 'false');
    document.body.dataset.ready = 'true';
  }
}

main();
