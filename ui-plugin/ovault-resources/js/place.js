// Content pages (places, the VM detail tab, the restore dialog): one page,
// the view chosen by `?view=` from the table in places.js. Each view module
// exports `render(ctx)`.

import { pluginApi, token, userName, watchJob, toast } from './portal.js';
import { config, apiBaseUrl, liveOptions } from './config.js';
import { Client } from './api.js';
import { Live } from './live.js';
import { place, DEFAULT_VIEW } from './places.js';
import { t } from './messages.js';
import { h, clear, alert } from './ui.js';

const LIVE_MODES = { websocket: 'live.websocket', polling: 'live.polling', offline: 'live.offline', connecting: 'live.connecting' };

async function main() {
  const root = document.getElementById('app');
  const params = new URLSearchParams(window.location.search);
  const view = params.get('view') || DEFAULT_VIEW;
  const api = pluginApi();
  const cfg = config(api);
  const client = new Client(apiBaseUrl(cfg), () => token(api));
  let live = null;
  const ctx = {
    api, cfg, client, params, view, root,
    user: userName(api),
    role: 'viewer',
    toast: (type, msg) => toast(type, msg, api),
    watchJob,
    // One live channel per page, opened by the first view that needs it.
    live() {
      if (!live) {
        live = new Live(client, liveOptions(cfg));
        live.start();
      }
      return live;
    },
    // Page header with the live-channel indicator.
    header(title, sub, ...actions) {
      const ind = h('span', { class: 'ov-live', 'data-mode': 'connecting', 'aria-live': 'polite' }, t('live.connecting'));
      if (live || ctx._wantsLive) {
        ctx.live().onStatus((m) => {
          ind.dataset.mode = m;
          ind.textContent = LIVE_MODES[m] ? t(LIVE_MODES[m]) : m;
        });
      }
      return h('header', { class: 'ov-header' },
        h('div', {}, h('h1', {}, title), sub ? h('div', { class: 'ov-sub' }, sub) : null),
        h('span', { class: 'ov-spacer' }),
        live || ctx._wantsLive ? ind : null,
        actions);
    },
    reveal(token_) { try { window.top.postMessage({ ovault: 'reveal', place: token_ }, window.location.origin); } catch (e) { /* */ } },
  };
  window.addEventListener('pagehide', () => { if (live) live.stop(); });
  if (!token(api)) {
    clear(root, h('main', { class: 'ov-main' }, alert('warning', t('page.notSignedIn'), t('page.notSignedInDetail'))));
    return;
  }
  try {
    ctx.role = await client.role();
    document.body.dataset.role = ctx.role;
    const mod = await (place(view) || place(DEFAULT_VIEW)).load();
    await mod.render(ctx);
  } catch (e) {
    console.error(e);
    clear(root, h('main', { class: 'ov-main' }, alert('danger', t('page.unreachable'),
      t('page.unreachableDetail', { error: e.message || e, apiBaseUrl: cfg.apiBaseUrl }))));
  } finally {
    root.setAttribute('aria-busy', 'false');
    document.body.dataset.ready = 'true';
  }
}

main();
