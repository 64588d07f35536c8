// "Backups" detail tab of a VM: its policy, next scheduled run and protection
// status; its backups (with the protected flag), its running jobs, back up now
// and restore.

import { can } from '../api.js';
import { TERMINAL } from '../live.js';
import { t } from '../messages.js';
import { h, clear, alert, emptyState, jobCard, renderJob, errorText, when, ago } from '../ui.js';
import { backupTable, protectionOf, protectionLabel } from './common.js';
import { openWizard } from './wizard.js';
import { fileSearch } from './file-search.js';

export async function render(ctx) {
  const vmId = ctx.params.get('vm');
  const vmName = ctx.params.get('name') || vmId;
  if (!vmId) {
    clear(ctx.root, h('main', { class: 'ov-main' }, emptyState(t('vm.select'), t('vm.selectDetail'))));
    return;
  }
  ctx._wantsLive = true;
  const operate = can.operate(ctx.role);
  const running = h('div', { 'data-region': 'running' });
  const table = h('div', { class: 'ov-table-wrap' });
  const note = h('div');
  const prot = h('section', { class: 'ov-card ov-card-body ov-protection', 'data-region': 'protection', 'aria-label': t('vm.protection') });
  const actions = operate ? [
    h('button', { class: 'ov-btn', 'data-action': 'backup', onclick: (e) => backup(e.currentTarget) }, t('action.backUpNow')),
    h('button', { class: 'ov-btn ov-secondary', 'data-action': 'restore', onclick: () => openWizard(ctx, { vm: { id: vmId, name: vmName }, onStarted: track }) }, t('action.restoreEllipsis')),
  ] : [];
  clear(ctx.root, ctx.header(t('vm.title', { name: vmName }), null, actions),
    h('main', { class: 'ov-main' }, note, prot, running, operate ? fileSearch(ctx, vmId) : null, table));

  const cards = new Map();
  const diskNames = {};
  function track(job) {
    let el = cards.get(job.id);
    if (!el) { el = jobCard(job, { diskNames }); cards.set(job.id, el); running.prepend(h('section', { class: 'ov-card', style: { marginBottom: '12px' } }, el)); } else renderJob(el, job, { diskNames });
    ctx.live().watch(job.id);
  }
  async function backup(btn) {
    btn.disabled = true;
    try {
      const r = await ctx.client.post('api/v1/backups', { vm_ids: [vmId], mode: 'auto' });
      ctx.watchJob(r.job, vmName); track(r.job);
      ctx.toast('info', t('toast.backupStarted', { names: vmName }));
    } catch (e) { ctx.toast('danger', t('toast.backupNotStarted', { names: vmName, error: errorText(e) })); } finally { btn.disabled = false; }
  }
  async function loadProtection() {
    let vm;
    try { vm = await ctx.client.get(`api/v1/vms/${encodeURIComponent(vmId)}`); } catch (e) {
      clear(prot, alert('warning', t('vm.protectionFailed'), errorText(e)));
      return;
    }
    const status = protectionOf(vm);
    const conflict = (vm.policy_conflict || []).length > 0;
    const item = (key, label, value) => h('div', { 'data-field': key }, h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, label), h('div', {}, value));
    clear(prot,
      item('protection', t('col.protection'), protectionLabel(status)),
      item('policy', t('vm.policy'), vm.policy ? h('a', { href: '#', 'data-policy': vm.policy_id, onclick: (e) => { e.preventDefault(); ctx.reveal('ovault-policies'); } }, vm.policy)
        : h('span', { class: conflict ? 'ov-error' : 'ov-muted' }, conflict ? t('vm.policyConflict', { n: vm.policy_conflict.length }) : t('vm.noPolicy'))),
      item('next-run', t('vm.nextRun'), vm.next_run ? h('span', { 'data-time': vm.next_run, title: vm.next_run }, when(vm.next_run)) : h('span', { class: 'ov-muted' }, t('none'))),
      item('last-backup', t('col.lastBackup'), vm.last_backup ? h('span', { title: vm.last_backup.created_at }, `${when(vm.last_backup.created_at)} · ${ago(vm.last_backup.created_at)}`) : h('span', { class: 'ov-muted' }, t('vm.never'))));
  }
  async function load() {
    loadProtection();
    try {
      const r = await ctx.client.get(`api/v1/backups?vm_id=${encodeURIComponent(vmId)}&limit=100`);
      for (const b of r.items || []) for (const d of b.disks || []) if (d.alias) diskNames[d.disk_id] = d.alias;
      clear(table, backupTable(ctx, (r.items || []).filter((b) => b.status !== 'deleted'), { showVm: false, onChange: load }));
    } catch (e) { clear(note, alert('danger', t('backups.loadFailed'), errorText(e))); }
  }
  ctx.live().onJob((j) => {
    if (!(j.machines || []).some((m) => m.vm_id === vmId)) return;
    if (cards.has(j.id) || !TERMINAL.has(j.state)) track(j);
    if (TERMINAL.has(j.state)) load();
  });
  ctx.live().watchAll(true);
  await load();
}
