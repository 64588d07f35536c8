// Policies: automatic protection. The list (schedule, next runs in the user's
// time zone, members, conflicts, enabled), create/edit (admins), delete with
// confirmation (admins; the backups stay), run now (operators), and the
// retention preview of a member VM on its real backups.
// GET/POST /api/v1/policies, PATCH/DELETE /api/v1/policies/{id},
// POST /api/v1/policies/{id}/run, GET /api/v1/policies/{id}/preview.

import { can } from '../api.js';
import { t } from '../messages.js';
import { h, clear, alert, emptyState, when, stateLabel, confirmDanger, errorText } from '../ui.js';
import { openPolicyForm, userTimeZone } from './policy-form.js';
import { previewPanel, retentionText } from './policy-preview.js';

export async function render(ctx) {
  const admin = can.admin(ctx.role);
  const operate = can.operate(ctx.role);
  const note = h('div');
  const body = h('div', { class: 'ov-table-wrap' });
  const previewRegion = h('div', { 'data-region': 'preview', style: { marginTop: '16px' } });
  const data = { policies: [], vms: [], targets: [], clusters: [] };
  clear(ctx.root,
    ctx.header(t('place.policies'), t('policies.sub', { zone: userTimeZone() }),
      admin ? h('button', { class: 'ov-btn', 'data-action': 'new-policy', onclick: () => edit(null) }, t('policies.new')) : null),
    h('main', { class: 'ov-main' }, note, h('section', { class: 'ov-card' }, body), previewRegion));
  const preview = previewPanel(ctx, previewRegion, () => data.policies);

  function members(p) {
    const n = p.members.length;
    return h('div', {}, h('span', { 'data-members': String(n) }, t(n === 1 ? 'policies.memberOne' : 'policies.members', { n })),
      p.excluded && p.excluded.length ? h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, t('policies.excluded', { n: p.excluded.length })) : null);
  }

  function conflicts(p) {
    if (!p.conflicts.length) return h('span', { class: 'ov-muted', 'data-conflicts': '0' }, t('none'));
    const byVm = new Map(p.members.map((m) => [m.vm_id, m]));
    return h('div', { 'data-conflicts': String(p.conflicts.length) },
      h('span', { class: 'ov-label ov-red' }, t('policies.conflictCount', { n: p.conflicts.length })),
      p.conflicts.map((id) => {
        const m = byVm.get(id) || { vm_name: id, conflict_with: [] };
        return h('div', { class: 'ov-muted', style: { fontSize: '12px' }, 'data-conflict': id },
          t('policies.conflictWith', { vm: m.vm_name || id, policies: (m.conflict_with || []).map((o) => o.name || o.id).join(', ') }));
      }));
  }

  function nextRuns(p) {
    if (!p.enabled) return h('span', { class: 'ov-muted' }, t('policies.disabledNoRuns'));
    return h('ol', { class: 'ov-runs', 'data-next-runs': p.id }, p.next_runs.slice(0, 3).map((x) => h('li', { 'data-time': x, title: x }, when(x))));
  }

  function show() {
    if (!data.policies.length) {
      clear(body, emptyState(t('policies.none'), admin ? t('policies.noneAdmin') : t('policies.noneDetail')));
      return;
    }
    clear(body, h('table', { class: 'ov-table', 'data-table': 'policies' },
      h('thead', {}, h('tr', {},
        h('th', {}, t('col.name')), h('th', {}, t('policy.schedule')), h('th', {}, t('policies.nextRuns', { zone: userTimeZone() })),
        h('th', {}, t('policy.retention')), h('th', {}, t('policies.membersCol')), h('th', {}, t('policies.conflicts')), h('th', {}, t('policies.enabled')),
        h('th', { class: 'ov-actions' }, h('span', { class: 'ov-sr' }, t('col.actions'))))),
      h('tbody', {}, data.policies.map((p) => h('tr', { 'data-policy': p.id, 'data-name': p.name },
        h('td', { class: 'ov-nowrap' }, h('strong', {}, p.name)),
        h('td', {}, h('div', { class: 'ov-mono ov-cron' }, p.schedule), h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, p.timezone)),
        h('td', { class: 'ov-nowrap' }, nextRuns(p)),
        h('td', { style: { fontSize: '13px' } }, retentionText(p.retention)),
        h('td', {}, members(p)),
        h('td', {}, conflicts(p)),
        h('td', { 'data-enabled': String(p.enabled) }, p.enabled ? stateLabel('succeeded', t('policies.on')) : stateLabel('canceled', t('policies.off'))),
        h('td', { class: 'ov-actions ov-nowrap' },
          h('button', { class: 'ov-btn ov-link', 'data-action': 'show-preview', onclick: () => preview.show(p.id, null, { scroll: true }) }, t('policies.preview')),
          operate ? h('button', { class: 'ov-btn ov-link', 'data-action': 'run', disabled: !p.members.length,
            'aria-label': t('policies.runLabel', { name: p.name }), onclick: (e) => run(p, e.currentTarget) }, t('policies.run')) : null,
          admin ? h('button', { class: 'ov-btn ov-link', 'data-action': 'edit', 'aria-label': t('policies.editLabel', { name: p.name }), onclick: () => edit(p) }, t('policies.edit')) : null,
          admin ? h('button', { class: 'ov-btn ov-link ov-danger', 'data-action': 'delete', 'aria-label': t('policies.deleteLabel', { name: p.name }), onclick: () => remove(p) }, t('action.delete')) : null))))));
  }

  async function load() {
    try {
      const r = await ctx.client.get('api/v1/policies');
      data.policies = r.items || [];
      clear(note);
    } catch (e) {
      clear(note, alert('danger', e.missing ? t('policies.unavailable') : t('policies.loadFailed'), e.missing ? t('policies.unavailableDetail') : errorText(e)));
      data.policies = [];
    }
    show();
  }

  async function edit(p) {
    if (!data.vms.length) {
      const [vms, targets, clusters] = await Promise.all([
        ctx.client.get('api/v1/vms').catch(() => ({ items: [] })),
        ctx.client.optional('api/v1/targets', null).catch(() => null),
        ctx.client.optional('api/v1/clusters', null).catch(() => null)]);
      data.vms = vms.items || [];
      data.targets = (targets && targets.items) || [];
      data.clusters = (clusters && clusters.items) || [];
    }
    const saved = await openPolicyForm(ctx, { policy: p, vms: data.vms, targets: data.targets, clusters: data.clusters });
    if (saved) { await load(); preview.refresh(); }
  }

  async function remove(p) {
    const ok = await confirmDanger({ title: t('policies.deleteTitle'), message: t('policies.deleteMessage', { name: p.name }), action: t('policies.deleteAction') });
    if (!ok) return;
    try {
      await ctx.client.del(`api/v1/policies/${p.id}`);
      ctx.toast('success', t('policies.deleted', { name: p.name }));
      await load(); preview.refresh();
    } catch (e) { ctx.toast('danger', t('policies.deleteFailed', { error: errorText(e) })); }
  }

  async function run(p, btn) {
    btn.disabled = true;
    try {
      const r = await ctx.client.post(`api/v1/policies/${p.id}/run`, {});
      const names = (r.jobs || [r.job]).flatMap((j) => (j.machines || []).map((m) => m.vm_name)).join(', ');
      for (const j of r.jobs || [r.job]) ctx.watchJob(j, (j.machines || []).map((m) => m.vm_name).join(', '));
      const skipped = Object.keys(r.skipped || {}).length;
      ctx.toast('info', skipped ? t('policies.runStartedSkipped', { name: p.name, names, n: skipped }) : t('policies.runStarted', { name: p.name, names }));
    } catch (e) {
      ctx.toast('danger', t('policies.runFailed', { name: p.name, error: errorText(e) }));
    } finally { btn.disabled = !p.members.length; }
  }

  await load();
  await preview.show(ctx.params.get('policy') || (data.policies[0] && data.policies[0].id), ctx.params.get('vm'));
}
