// Restores: restore jobs (live) and the way into the restore wizard.

import { can } from '../api.js';
import { h, clear } from '../ui.js';
import { jobList } from './jobs.js';
import { openWizard } from './wizard.js';

export async function render(ctx) {
  ctx._wantsLive = true;
  const list = h('div', { 'data-region': 'restores' });
  let jl = null;
  const start = can.operate(ctx.role)
    ? h('button', { class: 'ov-btn', 'data-action': 'new-restore', onclick: () => openWizard(ctx, { onStarted: (job) => jl.add(job) }) }, 'New restore…')
    : null;
  clear(ctx.root,
    ctx.header('Restores', 'Bring back a VM, replace it in place, or restore selected disks', start),
    h('main', { class: 'ov-main' }, h('section', { class: 'ov-card', 'aria-label': 'Restore jobs' }, list)));
  jl = jobList(ctx, { kind: 'restore', container: list });
  await jl.load();
}
