// Webhooks & settings: the plugin's connection to ovault and webhook
// subscriptions (admins manage them; others see them read-only).
// GET/POST /api/v1/webhooks {"url","events":[…]} and DELETE /api/v1/webhooks/{id}.

import { can } from '../api.js';
import { h, clear, alert, emptyState, when, stateLabel, confirmDanger, errorText } from '../ui.js';

const EVENTS = ['job.succeeded', 'job.failed', 'backup.created', 'restore.succeeded', 'target.low_space'];

export async function render(ctx) {
  ctx._wantsLive = true;
  const hooks = h('div', { class: 'ov-card-body ov-flush' });
  const form = h('div');
  const note = h('div');
  const health = h('dd', {}, '…');
  clear(ctx.root, ctx.header('Webhooks & settings', 'How this portal talks to ovault, and who hears about it'),
    h('main', { class: 'ov-main' }, note,
      h('div', { class: 'ov-grid ov-grid-3-1' },
        h('section', { class: 'ov-card', 'aria-label': 'Webhooks' }, h('div', { class: 'ov-card-title' }, 'Webhooks'), hooks, form),
        h('section', { class: 'ov-card', 'aria-label': 'Connection' }, h('div', { class: 'ov-card-title' }, 'Connection'),
          h('div', { class: 'ov-card-body' }, h('dl', { class: 'ov-summary' },
            h('dt', {}, 'ovault API'), h('dd', { class: 'ov-mono' }, ctx.client.base),
            h('dt', {}, 'Signed in as'), h('dd', {}, ctx.user || '—'),
            h('dt', {}, 'Your ovault role'), h('dd', { 'data-role': ctx.role }, ctx.role),
            h('dt', {}, 'Service'), health,
            h('dt', {}, 'Live updates'), h('dd', {}, 'websocket when offered, else polling every ', `${ctx.cfg.pollIntervalMs} ms`)),
            h('p', { class: 'ov-muted', style: { fontSize: '12px', margin: 0 } },
              'These values come from the plugin configuration (/etc/ovirt-engine/ui-plugins/ovault-config.json). It holds no secrets: every request carries your own portal session token.'))))));
  ctx.live();
  ctx.client.get('healthz').then((r) => clear(health, stateLabel('succeeded', (r && r.status) || 'healthy')),
    (e) => clear(health, stateLabel('failed', e.status ? `HTTP ${e.status}` : 'unreachable')));

  const admin = can.admin(ctx.role);
  async function load() {
    let r;
    try { r = await ctx.client.optional('api/v1/webhooks', null); } catch (e) {
      clear(hooks, e.status === 403 ? emptyState('Webhooks are managed by ovault administrators') : alert('danger', 'Could not load webhooks', errorText(e)));
      return;
    }
    if (r === null) { clear(hooks, emptyState('Webhooks are not available', 'This ovault orchestrator does not offer webhook subscriptions over the API yet.')); clear(form); return; }
    const items = r.items || [];
    clear(hooks, items.length ? h('table', { class: 'ov-table', 'data-table': 'webhooks' },
      h('thead', {}, h('tr', {}, h('th', {}, 'URL'), h('th', {}, 'Events'), h('th', {}, 'Created'), admin ? h('th', {}, h('span', { class: 'ov-sr' }, 'Actions')) : null)),
      h('tbody', {}, items.map((w) => h('tr', { 'data-webhook': w.id },
        h('td', { class: 'ov-mono' }, w.url), h('td', {}, (w.events || []).join(', ')), h('td', {}, when(w.created_at)),
        admin ? h('td', { class: 'ov-actions' }, h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', onclick: () => remove(w) }, 'Delete')) : null))))
      : emptyState('No webhooks', admin ? 'Add one below to have ovault call your service when jobs end.' : null));
    if (admin) renderForm(); else clear(form);
  }
  function renderForm() {
    const url = h('input', { class: 'ov-input', id: 'ov-wh-url', type: 'url', placeholder: 'https://example.com/hooks/ovault', required: true });
    const boxes = EVENTS.map((e) => h('label', { class: 'ov-check' }, h('input', { type: 'checkbox', value: e, checked: e.startsWith('job.') }), e));
    const msg = h('div');
    clear(form, h('div', { class: 'ov-card-body', style: { borderTop: '1px solid var(--ov-border-light)', paddingTop: '12px' } },
      h('h3', { style: { marginBottom: '8px' } }, 'Add a webhook'),
      h('div', { class: 'ov-form' }, h('label', { for: 'ov-wh-url' }, 'URL'), url,
        h('span', { class: 'ov-muted' }, 'Events'), h('div', {}, boxes)),
      msg,
      h('button', { class: 'ov-btn', style: { marginTop: '8px' }, onclick: async () => {
        const events = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        try {
          const r = await ctx.client.post('api/v1/webhooks', { url: url.value.trim(), events });
          clear(msg, r && r.secret ? alert('success', 'Webhook added', `Signing secret (shown once): ${r.secret}`) : null);
          ctx.toast('success', 'Webhook added');
          load();
        } catch (e) { clear(msg, alert('danger', 'Could not add the webhook', errorText(e))); }
      } }, 'Add webhook')));
  }
  async function remove(w) {
    if (!await confirmDanger({ title: 'Delete webhook?', message: `ovault stops calling ${w.url}.`, action: 'Delete webhook' })) return;
    try { await ctx.client.del(`api/v1/webhooks/${w.id}`); ctx.toast('success', 'Webhook deleted'); load(); } catch (e) { ctx.toast('danger', `Could not delete: ${errorText(e)}`); }
  }
  await load();
}
