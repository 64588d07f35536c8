// Webhooks & settings: the plugin's connection to ovault and webhook
// subscriptions (admins manage them; others see them read-only).
// GET/POST /api/v1/webhooks {"url","events":[…]} and DELETE /api/v1/webhooks/{id}.

import { can } from '../api.js';
import { t } from '../messages.js';
import { h, clear, alert, emptyState, when, stateLabel, confirmDanger, errorText } from '../ui.js';

const EVENTS = ['job.succeeded', 'job.failed', 'backup.created', 'restore.succeeded', 'target.low_space'];

export async function render(ctx) {
  ctx._wantsLive = true;
  const hooks = h('div', { class: 'ov-card-body ov-flush' });
  const form = h('div');
  const note = h('div');
  const health = h('dd', {}, '…');
  clear(ctx.root, ctx.header(t('settings.title'), t('settings.sub')),
    h('main', { class: 'ov-main' }, note,
      h('div', { class: 'ov-grid ov-grid-3-1' },
        h('section', { class: 'ov-card', 'aria-label': t('settings.webhooks') }, h('div', { class: 'ov-card-title' }, t('settings.webhooks')), hooks, form),
        h('section', { class: 'ov-card', 'aria-label': t('settings.connection') }, h('div', { class: 'ov-card-title' }, t('settings.connection')),
          h('div', { class: 'ov-card-body' }, h('dl', { class: 'ov-summary' },
            h('dt', {}, t('settings.api')), h('dd', { class: 'ov-mono' }, ctx.client.base),
            h('dt', {}, t('settings.user')), h('dd', {}, ctx.user || t('none')),
            h('dt', {}, t('settings.role')), h('dd', { 'data-role': ctx.role }, ctx.role),
            h('dt', {}, t('settings.service')), health,
            h('dt', {}, t('settings.live')), h('dd', {}, t('settings.liveDetail', { ms: ctx.cfg.pollIntervalMs }))),
            h('p', { class: 'ov-muted', style: { fontSize: '12px', margin: 0 } }, t('settings.configNote')))))));
  ctx.live();
  ctx.client.get('healthz').then((r) => clear(health, stateLabel('succeeded', (r && r.status) || t('settings.healthy'))),
    (e) => clear(health, stateLabel('failed', e.status ? `HTTP ${e.status}` : t('settings.unreachable'))));

  const admin = can.admin(ctx.role);
  async function load() {
    let r;
    try { r = await ctx.client.optional('api/v1/webhooks', null); } catch (e) {
      clear(hooks, e.status === 403 ? emptyState(t('webhooks.adminsOnly')) : alert('danger', t('webhooks.loadFailed'), errorText(e)));
      return;
    }
    if (r === null) { clear(hooks, emptyState(t('webhooks.unavailable'), t('webhooks.unavailableDetail'))); clear(form); return; }
    const items = r.items || [];
    clear(hooks, items.length ? h('table', { class: 'ov-table', 'data-table': 'webhooks' },
      h('thead', {}, h('tr', {}, h('th', {}, t('webhooks.url')), h('th', {}, t('webhooks.events')), h('th', {}, t('col.created')), admin ? h('th', {}, h('span', { class: 'ov-sr' }, t('col.actions'))) : null)),
      h('tbody', {}, items.map((w) => h('tr', { 'data-webhook': w.id },
        h('td', { class: 'ov-mono' }, w.url), h('td', {}, (w.events || []).join(', ')), h('td', {}, when(w.created_at)),
        admin ? h('td', { class: 'ov-actions' }, h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', onclick: () => remove(w) }, t('action.delete'))) : null))))
      : emptyState(t('webhooks.none'), admin ? t('webhooks.noneDetail') : null));
    if (admin) renderForm(); else clear(form);
  }
  function renderForm() {
    const url = h('input', { class: 'ov-input', id: 'ov-wh-url', type: 'url', placeholder: 'https://example.com/hooks/ovault', required: true });
    const boxes = EVENTS.map((e) => h('label', { class: 'ov-check' }, h('input', { type: 'checkbox', value: e, checked: e.startsWith('job.') }), e));
    const msg = h('div');
    clear(form, h('div', { class: 'ov-card-body', style: { borderTop: '1px solid var(--ov-border-light)', paddingTop: '12px' } },
      h('h3', { style: { marginBottom: '8px' } }, t('webhooks.addTitle')),
      h('div', { class: 'ov-form' }, h('label', { for: 'ov-wh-url' }, t('webhooks.url')), url,
        h('span', { class: 'ov-muted' }, t('webhooks.events')), h('div', {}, boxes)),
      msg,
      h('button', { class: 'ov-btn', style: { marginTop: '8px' }, onclick: async () => {
        const events = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
        try {
          const r = await ctx.client.post('api/v1/webhooks', { url: url.value.trim(), events });
          clear(msg, r && r.secret ? alert('success', t('webhooks.added'), t('webhooks.secret', { secret: r.secret })) : null);
          ctx.toast('success', t('webhooks.added'));
          load();
        } catch (e) { clear(msg, alert('danger', t('webhooks.addFailed'), errorText(e))); }
      } }, t('webhooks.add'))));
  }
  async function remove(w) {
    if (!await confirmDanger({ title: t('webhooks.deleteTitle'), message: t('webhooks.deleteMessage', { url: w.url }), action: t('webhooks.deleteAction') })) return;
    try { await ctx.client.del(`api/v1/webhooks/${w.id}`); ctx.toast('success', t('webhooks.deleted')); load(); } catch (e) { ctx.toast('danger', t('webhooks.deleteFailed', { error: errorText(e) })); }
  }
  await load();
}
