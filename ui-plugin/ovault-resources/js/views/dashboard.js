// Dashboard: protection at a glance, running jobs live, recent results, target
// usage and deduplication.

import { can } from '../api.js';
import { TERMINAL } from '../live.js';
import { t } from '../messages.js';
import { h, clear, bytes, when, ago, stateLabel, jobCard, renderJob, emptyState, alert, errorText } from '../ui.js';
import { protectionOf, protectionLabel } from './common.js';

const STATUSES = ['protected', 'at_risk', 'unprotected', 'excluded'];

export async function render(ctx) {
  ctx._wantsLive = true;
  const kpis = h('div', { class: 'ov-grid ov-grid-6', style: { marginBottom: '16px' } });
  const vmBody = h('div', { class: 'ov-card-body ov-flush' });
  const runBody = h('div', { class: 'ov-card-body ov-flush', 'data-region': 'running' });
  const recentBody = h('div', { class: 'ov-card-body ov-flush', 'data-region': 'recent' });
  const note = h('div');
  clear(ctx.root,
    ctx.header(t('dashboard.title'), t('dashboard.sub')),
    h('main', { class: 'ov-main' }, note, kpis,
      h('div', { class: 'ov-grid ov-grid-3-1' },
        h('section', { class: 'ov-card', 'aria-label': t('dashboard.vms') }, h('div', { class: 'ov-card-title' }, t('dashboard.vms')), vmBody),
        h('div', { class: 'ov-grid', style: { alignContent: 'start' } },
          h('section', { class: 'ov-card', 'aria-label': t('dashboard.running') }, h('div', { class: 'ov-card-title' }, t('dashboard.running')), runBody),
          h('section', { class: 'ov-card', 'aria-label': t('dashboard.recent') }, h('div', { class: 'ov-card-title' }, t('dashboard.recent')), recentBody)))));

  const data = { vms: [], jobs: new Map(), backups: [], targets: null };
  const cards = new Map();

  async function load() {
    const [vms, jobs, backups, targets] = await Promise.all([
      ctx.client.get('api/v1/vms'),
      ctx.client.get('api/v1/jobs?limit=50'),
      ctx.client.get('api/v1/backups?limit=200').catch(() => ({ items: [] })),
      ctx.client.optional('api/v1/targets', null).catch(() => null),
    ]);
    data.vms = vms.items || [];
    for (const j of jobs.items || []) data.jobs.set(j.id, j);
    data.backups = (backups.items || []).filter((b) => b.status !== 'deleted');
    data.targets = targets && (targets.items || targets);
  }

  function kpi(label, value, noteText, cls = '', key = '') {
    return h('div', { class: `ov-card ov-kpi ${cls}`, 'data-kpi': key },
      h('div', { class: 'ov-kpi-label' }, label), h('div', { class: 'ov-kpi-value' }, value), h('div', { class: 'ov-kpi-note' }, noteText));
  }

  function renderKpis() {
    // VMs by protection status (a policy's schedule met, at risk, no policy, excluded)
    const count = Object.fromEntries(STATUSES.map((st) => [st, 0]));
    for (const v of data.vms) { const st = protectionOf(v); count[st] = (count[st] || 0) + 1; }
    const n = data.vms.length;
    const prot = count.protected;
    const attention = count.at_risk + count.unprotected;
    const jobs = [...data.jobs.values()];
    const running = jobs.filter((j) => !TERMINAL.has(j.state)).length;
    const dayAgo = Date.now() - 86400e3;
    const recent = jobs.filter((j) => TERMINAL.has(j.state) && new Date(j.finished_at || j.created_at).getTime() > dayAgo);
    const ok = recent.filter((j) => j.state === 'succeeded').length;
    const bad = recent.filter((j) => j.state === 'failed').length;
    const targets = (Array.isArray(data.targets) ? data.targets : []).map((x) => ({ ...x, ...(x.usage || {}) }));
    const active = targets.filter((x) => x.active !== false);
    const used = active.reduce((a, x) => a + (x.used_bytes ?? x.stored_bytes ?? 0), 0);
    const cap = active.reduce((a, x) => a + (x.capacity_bytes || 0), 0);
    const logical = data.backups.reduce((a, b) => a + (b.size_bytes || 0), 0);
    const stored = data.backups.reduce((a, b) => a + (b.new_bytes || 0), 0);
    let dedup = null; let dedupNote = '';
    const td = active.find((x) => x.dedup_ratio);
    let dedupLabel = t('kpi.dedup');
    if (td) { dedup = td.dedup_ratio; dedupNote = t('kpi.dedupFromTarget'); }
    else if (stored > 0) {
      // Without target statistics: protected size over new bytes written, which
      // counts skipped zeroes as well as deduplicated chunks.
      dedup = logical / stored; dedupLabel = t('kpi.reduction'); dedupNote = t('kpi.reductionNote', { logical: bytes(logical), stored: bytes(stored) });
    }
    const pct = (k) => `${n ? (count[k] / n) * 100 : 0}%`;
    clear(kpis,
      kpi(t('kpi.protected'), `${prot} / ${n}`,
        h('div', {}, h('div', { class: 'ov-split', 'aria-hidden': 'true' }, STATUSES.map((k) => h('div', { class: `ov-split-${k}`, style: { width: pct(k) } }))),
          h('div', { class: 'ov-legend' }, STATUSES.map((k) => h('span', { class: `ov-l-${k}`, 'data-status': k, 'data-count': String(count[k]) },
            t(`kpi.status.${k}`, { n: count[k] }))))),
        prot === n && prot ? 'ov-ok' : '', 'protected'),
      kpi(t('kpi.attention'), String(attention), attention ? t('kpi.attentionSome', { atRisk: count.at_risk, unprotected: count.unprotected }) : t('kpi.attentionNone'),
        attention ? 'ov-warn' : 'ov-ok', 'unprotected'),
      kpi(t('kpi.running'), String(running), running ? t('kpi.runningSome') : t('kpi.runningNone'), '', 'running'),
      kpi(t('kpi.last24h'), h('span', {}, h('span', { style: { color: 'var(--ov-green)' } }, String(ok)), ' / ', h('span', { style: { color: bad ? 'var(--ov-red)' : 'inherit' } }, String(bad))),
        t('kpi.last24hNote'), '', 'results'),
      kpi(t('kpi.target'), cap ? `${Math.round((used / cap) * 100)}%` : (active.some((x) => x.usage || x.used_bytes !== undefined) ? bytes(used) : t('none')),
        cap ? t('progress.of', { done: bytes(used), total: bytes(cap) }) : (active.some((x) => x.usage) ? t('kpi.storedOn', { names: active.map((x) => x.name).join(', ') }) : t('kpi.noTargetStats')),
        cap && used / cap > 0.9 ? 'ov-bad' : '', 'target'),
      kpi(dedupLabel, dedup ? t('fmt.ratio', { x: dedup.toFixed(1) }) : t('none'), dedupNote || t('kpi.noBackups'), '', 'dedup'));
  }

  function renderVms() {
    if (!data.vms.length) { clear(vmBody, emptyState(t('dashboard.noVms'), t('dashboard.noVmsDetail'))); return; }
    const operate = can.operate(ctx.role);
    clear(vmBody, h('table', { class: 'ov-table', 'data-table': 'vms' },
      h('thead', {}, h('tr', {}, h('th', {}, t('col.name')), h('th', {}, t('col.status')), h('th', {}, t('col.protection')), h('th', {}, t('col.lastBackup')),
        operate ? h('th', {}, h('span', { class: 'ov-sr' }, t('col.actions'))) : null)),
      h('tbody', {}, data.vms.map((v) => h('tr', { 'data-vm': v.id },
        h('td', { class: 'ov-nowrap' }, h('strong', {}, v.name)),
        h('td', { class: 'ov-nowrap' }, h('span', { class: `ov-dot${v.status === 'up' ? ' ov-up' : ''}`, 'aria-hidden': 'true' }), ' ', v.status),
        h('td', {}, protectionLabel(protectionOf(v)), v.policy ? h('div', { class: 'ov-muted', style: { fontSize: '12px' }, 'data-policy': v.policy_id }, v.policy) : null),
        h('td', {}, v.last_backup ? [h('div', { class: 'ov-nowrap' }, when(v.last_backup.created_at)), h('div', { class: 'ov-muted', style: { fontSize: '12px' } }, `${v.last_backup.mode || ''} · ${ago(v.last_backup.created_at)}`)] : h('span', { class: 'ov-muted' }, t('vm.never'))),
        operate ? h('td', { class: 'ov-actions' }, h('button', { class: 'ov-btn ov-secondary ov-small', 'data-action': 'backup',
          'aria-label': t('vm.backUpLabel', { name: v.name }), onclick: (e) => backup(v, e.currentTarget) }, t('action.backUpNow'))) : null)))));
  }

  async function backup(vm, btn) {
    btn.disabled = true;
    try {
      const r = await ctx.client.post('api/v1/backups', { vm_ids: [vm.id], mode: 'auto' });
      ctx.watchJob(r.job, vm.name);
      ctx.live().watch(r.job.id);
      onJob(r.job);
      ctx.toast('info', t('toast.backupStarted', { names: vm.name }));
    } catch (e) {
      ctx.toast('danger', t('toast.backupNotStarted', { names: vm.name, error: errorText(e) }));
    } finally { btn.disabled = false; }
  }

  function renderRunning() {
    const running = [...data.jobs.values()].filter((j) => !TERMINAL.has(j.state));
    for (const [id, el] of cards) if (!running.find((j) => j.id === id)) { el.remove(); cards.delete(id); }
    if (!running.length) { clear(runBody, emptyState(t('dashboard.noRunning'))); return; }
    runBody.querySelector('.ov-empty')?.remove();
    for (const j of running) {
      let el = cards.get(j.id);
      if (!el) { el = jobCard(j, {}); cards.set(j.id, el); runBody.prepend(el); } else renderJob(el, j, {});
    }
  }

  function renderRecent() {
    const done = [...data.jobs.values()].filter((j) => TERMINAL.has(j.state))
      .sort((a, b) => (b.finished_at || b.created_at || '').localeCompare(a.finished_at || a.created_at || '')).slice(0, 8);
    if (!done.length) { clear(recentBody, emptyState(t('dashboard.noFinished'))); return; }
    clear(recentBody, h('table', { class: 'ov-table' }, h('tbody', {}, done.map((j) => h('tr', { 'data-job': j.id },
      h('td', {}, t(`kind.${j.kind}`)),
      h('td', {}, (j.machines || []).map((m) => m.vm_name).join(', ')),
      h('td', {}, stateLabel(j.state)),
      h('td', { class: 'ov-muted', style: { fontSize: '12px' } }, ago(j.finished_at || j.created_at)))))));
  }

  let refreshing = null;
  function onJob(j) {
    const prev = data.jobs.get(j.id);
    data.jobs.set(j.id, j);
    renderRunning();
    if (TERMINAL.has(j.state) && (!prev || !TERMINAL.has(prev.state))) {
      renderRecent();
      // Protection and sizes change when a job ends: refresh them once.
      clearTimeout(refreshing);
      refreshing = setTimeout(() => load().then(() => { renderKpis(); renderVms(); }).catch(() => {}), 300);
    } else if (!prev) renderKpis();
  }

  try {
    await load();
  } catch (e) {
    clear(note, alert('danger', t('dashboard.loadFailed'), errorText(e)));
    return;
  }
  renderKpis(); renderVms(); renderRunning(); renderRecent();
  const live = ctx.live();
  live.onJob(onJob);
  live.watchAll(true);
}
