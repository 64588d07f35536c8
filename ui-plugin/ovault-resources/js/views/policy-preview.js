// Retention preview: for one member VM of a policy, which of its real backups
// the policy's retention keeps and which it would prune, and the rule behind
// each (GET /api/v1/policies/{id}/preview?vm_id=). Nothing is deleted here.

import { t } from '../messages.js';
import { h, clear, alert, emptyState, stateLabel, errorText } from '../ui.js';

// to the second: backups of one VM are often minutes apart
function exact(iso) {
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function ruleLabel(rule) {
  return rule ? t(`rule.${rule.replace(/-/g, '_')}`, {}, rule) : t('none');
}

export function retentionText(retention) {
  const parts = Object.entries(retention || {}).filter(([, n]) => n).map(([k, n]) => t('policy.keepN', { rule: ruleLabel(k), n }));
  return parts.length ? parts.join(', ') : t('policy.keepAll');
}

// `region` is the element the preview draws into; `policies` the page's list.
export function previewPanel(ctx, region, policies) {
  const polSel = h('select', { class: 'ov-select', id: 'ov-pv-policy', 'aria-label': t('preview.policy') });
  const vmSel = h('select', { class: 'ov-select', id: 'ov-pv-vm', 'aria-label': t('col.vm') });
  const out = h('div', { 'data-region': 'preview-result' });
  const summary = h('div', { class: 'ov-muted' });

  function fillPolicies() {
    const keep = polSel.value;
    clear(polSel, policies().map((p) => h('option', { value: p.id }, p.name)));
    if (keep && policies().some((p) => p.id === keep)) polSel.value = keep;
  }
  function fillVms() {
    const p = policies().find((x) => x.id === polSel.value);
    const keep = vmSel.value;
    clear(vmSel, (p ? p.members : []).map((m) => h('option', { value: m.vm_id }, m.vm_name || m.vm_id)));
    if (keep && [...vmSel.options].some((o) => o.value === keep)) vmSel.value = keep;
    clear(summary, p ? t('preview.retention', { rules: retentionText(p.retention), zone: p.timezone }) : '');
  }

  async function load() {
    if (!polSel.value) { clear(out, emptyState(t('preview.noPolicy'))); return; }
    if (!vmSel.value) { clear(out, emptyState(t('preview.noMembers'), t('preview.noMembersDetail'))); return; }
    clear(out, h('div', { class: 'ov-muted' }, t('loading')));
    let r;
    try {
      r = await ctx.client.get(`api/v1/policies/${polSel.value}/preview?vm_id=${encodeURIComponent(vmSel.value)}`);
    } catch (e) { clear(out, alert('danger', t('preview.failed'), errorText(e))); return; }
    const vm = (r.vms || [])[0];
    if (!vm || !vm.backups.length) { clear(out, emptyState(t('preview.noBackups'), t('preview.noBackupsDetail'))); return; }
    const kept = vm.backups.filter((b) => b.action === 'keep');
    const pruned = vm.backups.filter((b) => b.action !== 'keep');
    const group = (rows, action, title) => h('tbody', { 'data-list': action },
      h('tr', { class: 'ov-group' }, h('th', { colspan: '5', scope: 'rowgroup' }, title)),
      rows.length ? rows.map((b) => h('tr', { 'data-backup': b.backup_id, 'data-decision': b.action, 'data-rule': b.rule || '', class: action === 'prune' ? 'ov-pruned' : null },
        h('td', { class: 'ov-nowrap', title: b.created_at }, exact(b.created_at), b.protected ? [' ', h('span', { class: 'ov-label ov-blue', 'data-protected': 'true' }, t('backups.protected'))] : null),
        h('td', {}, b.mode || t('none')),
        h('td', {}, stateLabel(b.status)),
        h('td', { class: 'ov-nowrap' }, action === 'keep' ? stateLabel('succeeded', ruleLabel(b.rule)) : h('span', { class: 'ov-label ov-red' }, t('preview.pruned'))),
        h('td', { class: 'ov-muted' }, b.reason || '')))
        : h('tr', {}, h('td', { colspan: '5', class: 'ov-muted' }, t('preview.nothing'))));
    clear(out, h('table', { class: 'ov-table', 'data-table': 'preview' },
      h('thead', {}, h('tr', {}, h('th', {}, t('col.created')), h('th', {}, t('col.mode')), h('th', {}, t('col.status')),
        h('th', {}, t('preview.rule')), h('th', {}, t('preview.reason')))),
      group(kept, 'keep', t('preview.kept', { n: kept.length })),
      group(pruned, 'prune', t('preview.wouldPrune', { n: pruned.length }))));
  }

  polSel.addEventListener('change', () => { fillVms(); load(); });
  vmSel.addEventListener('change', load);
  clear(region, h('section', { class: 'ov-card', 'aria-label': t('preview.title') },
    h('div', { class: 'ov-card-title' }, t('preview.title')),
    h('div', { class: 'ov-card-body' },
      h('p', { class: 'ov-muted', style: { marginTop: 0 } }, t('preview.sub')),
      h('div', { class: 'ov-toolbar' }, polSel, vmSel, h('button', { class: 'ov-btn ov-secondary', 'data-action': 'preview', onclick: load }, t('action.refresh'))),
      summary, out)));

  return {
    // show the preview of `policyId` (and `vmId` when given)
    show(policyId, vmId, { scroll = false } = {}) {
      fillPolicies();
      if (policyId) polSel.value = policyId;
      fillVms();
      if (vmId) vmSel.value = vmId;
      if (scroll) region.scrollIntoView({ block: 'start' });
      return load();
    },
    refresh() { fillPolicies(); fillVms(); return load(); },
  };
}
