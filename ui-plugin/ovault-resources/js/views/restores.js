// Restores: restore jobs (live) and the way into the restore wizard.

import { can } from '../api.js';
import { t } from '../messages.js';
import { h, clear } from '../ui.js';
import { jobList } from './jobs.js';
import { openWizard } from './wizard.js';

export async function render(ctx) {
  ctx._wantsLive = true;
  const list = h('div', { 'data-region': 'restores' });
  let jl = null;
  const start = can.operate(ctx.role)
    ? h('button', { class: 'ov-btn', 'data-action': 'new-restore', onclick: () => openWizard(ctx, { onStarted: (job) => jl.add(job) }) }, t('restores.new'))
    : null;
  clear(ctx.root,
    ctx.header(t('place.restores'), t('restores.sub'), start),
    h('main', { class: 'ov-main' }, h('section', { class: 'ov-card', 'aria-label': t('restores.jobs') }, list)));
  jl = jobList(ctx, { kind: 'restore', container: list });
  await jl.load();
}
