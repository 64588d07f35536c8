// Jobs: backup and restore jobs with live bars per VM and disk, rate and ETA.

import { can } from '../api.js';
import { TERMINAL } from '../live.js';
import { t } from '../messages.js';
import { h, clear, jobCard, renderJob, emptyState, confirmDanger, errorText } from '../ui.js';

export function jobList(ctx, { kind = null, container }) {
  const cards = new Map();
  const jobs = new Map();
  const filter = { state: '' };
  const opts = {
    diskNames: {},
    onCancel: can.operate(ctx.role) ? (job) => cancel(ctx, job) : null,
  };
  function visible(j) {
    if (kind && j.kind !== kind) return false;
    if (filter.state === 'active') return !TERMINAL.has(j.state);
    return !filter.state || j.state === filter.state;
  }
  function sorted() {
    return [...jobs.values()].filter(visible).sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
  }
  function redraw() {
    const list = sorted();
    for (const [id, el] of cards) if (!list.find((j) => j.id === id)) { el.remove(); cards.delete(id); }
    if (!list.length) { clear(container, emptyState(kind === 'restore' ? t('jobs.noRestores') : t('jobs.none'), filter.state ? t('jobs.noMatch') : t('jobs.noneDetail'))); return; }
    container.querySelector('.ov-empty')?.remove();
    let prev = null;
    for (const j of list) {
      let el = cards.get(j.id);
      if (!el) { el = jobCard(j, opts); cards.set(j.id, el); } else renderJob(el, j, opts);
      if (prev ? prev.nextSibling !== el : container.firstChild !== el) {
        if (prev) prev.after(el); else container.prepend(el);
      }
      prev = el;
    }
  }
  const live = ctx.live();
  live.onJob((j) => { jobs.set(j.id, j); redraw(); });
  live.watchAll(true);
  return {
    setFilter(state) { filter.state = state; redraw(); },
    async load() {
      // Disk aliases for the bars, from the backups (jobs carry disk ids only).
      ctx.client.get('api/v1/backups?limit=200').then((b) => {
        for (const x of b.items || []) for (const d of x.disks || []) if (d.alias) opts.diskNames[d.disk_id] = d.alias;
        for (const [id, el] of cards) { el.dataset.shape = ''; renderJob(el, jobs.get(id), opts); }
      }, () => {});
      const r = await ctx.client.get(`api/v1/jobs?limit=50${kind ? `&kind=${kind}` : ''}`);
      for (const j of r.items || []) jobs.set(j.id, j);
      redraw();
    },
    add(j) { jobs.set(j.id, j); live.watch(j.id); redraw(); },
  };
}

async function cancel(ctx, job) {
  const names = (job.machines || []).map((m) => m.vm_name).join(', ');
  const ok = await confirmDanger({ title: t('jobs.cancelTitle'), action: t('jobs.cancelAction'),
    message: t('jobs.cancelMessage', { kind: t(`kind.${job.kind}.lower`), names }) });
  if (!ok) return;
  try {
    await ctx.client.post(`api/v1/jobs/${job.id}/cancel`, {});
    ctx.toast('info', t('toast.cancelRequested', { kind: t(`kind.${job.kind}.lower`), names }));
  } catch (e) { ctx.toast('danger', t('toast.cancelFailed', { error: errorText(e) })); }
}

export async function render(ctx) {
  ctx._wantsLive = true;
  const list = h('div', { 'data-region': 'jobs' });
  const stSel = h('select', { class: 'ov-select', 'aria-label': t('jobs.stateFilter') },
    [['', 'jobs.filterAll'], ['active', 'jobs.filterActive'], ['succeeded', 'jobs.filterSucceeded'], ['failed', 'jobs.filterFailed'], ['canceled', 'jobs.filterCanceled']]
      .map(([v, key]) => h('option', { value: v }, t(key))));
  clear(ctx.root,
    ctx.header(t('place.jobs'), t('jobs.sub')),
    h('main', { class: 'ov-main' },
      h('div', { class: 'ov-toolbar' }, stSel),
      h('section', { class: 'ov-card', 'aria-label': t('place.jobs') }, list)));
  const jl = jobList(ctx, { container: list });
  stSel.addEventListener('change', () => jl.setFilter(stSel.value));
  await jl.load();
}
