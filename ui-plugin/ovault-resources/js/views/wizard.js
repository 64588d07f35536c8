// Restore wizard: backup → restore type → options → disks → review → progress.
//
// POST /api/v1/backups/{id}/restore {"kind":"new"|"in_place"|"disks", "name",
// "cluster_id", "storage_domain_id", "disk_ids", "target_vm_id", "power_on"}.
// Clusters and storage domains come from GET /api/v1/clusters and
// /api/v1/storage-domains ({"items":[{"id","name"}]}); without them the
// wizard offers "same as the original VM", which the orchestrator defaults to.
// An in-place restore overwrites the VM: the user types its name to confirm.

import { TERMINAL } from '../live.js';
import { h, clear, modal, alert, bytes, when, jobCard, renderJob, emptyState, errorText } from '../ui.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const STEPS = [['source', 'Backup'], ['kind', 'Restore type'], ['options', 'Options'], ['disks', 'Disks'], ['review', 'Review']];

function stamp() {
  const d = new Date(); const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}`;
}

export async function openWizard(ctx, { vm = null, backupId = null, container = null, onClose = null, onStarted = null } = {}) {
  const s = {
    step: 0, vm, backups: [], backup: null, kind: 'new', name: '', cluster_id: '', storage_domain_id: '',
    disks: new Set(), target_vm_id: '', power_on: false, confirm: '', job: null, busy: false, error: null,
  };
  const data = { vms: [], clusters: null, sds: null };
  const nav = h('ol', { class: 'ov-wizard-nav', 'aria-label': 'Restore steps' });
  const body = h('div', { class: 'ov-wizard-body', 'aria-live': 'polite' });
  const foot = h('div', { class: 'ov-wizard-foot' });
  const wiz = h('div', { class: 'ov-wizard', 'data-wizard': 'restore' }, nav, body);
  let m = null;
  const root = h('div', { class: container ? 'ov-dialog-page' : '' }, wiz, foot);
  const close = () => { if (m) m.close(); else if (onClose) onClose(); };
  if (container) clear(container, root);
  else m = modal({ title: vm ? `Restore ${vm.name}` : 'Restore', body: root, onClose: () => onClose && onClose() });
  if (m) { m.el.style.maxWidth = '960px'; m.el.querySelector('.ov-modal-body').style.padding = '0'; }

  clear(body, h('div', { class: 'ov-muted' }, 'Loading…'));
  const [vms, clusters, sds] = await Promise.all([
    ctx.client.get('api/v1/vms').catch(() => ({ items: [] })),
    ctx.client.optional('api/v1/clusters', null).catch(() => null),
    ctx.client.optional('api/v1/storage-domains', null).catch(() => null),
  ]);
  data.vms = vms.items || [];
  data.clusters = clusters && clusters.items;
  data.sds = sds && sds.items;
  if (s.vm && !s.vm.name) s.vm.name = (data.vms.find((v) => v.id === s.vm.id) || {}).name || s.vm.id;

  async function loadBackups() {
    s.backups = []; s.backup = null;
    if (!s.vm) return;
    try {
      const r = await ctx.client.get(`api/v1/backups?vm_id=${encodeURIComponent(s.vm.id)}&status=succeeded&limit=100`);
      s.backups = r.items || [];
    } catch (e) { s.error = errorText(e); }
    s.backup = s.backups.find((b) => b.id === backupId) || s.backups[0] || null;
    resetDisks();
  }
  function resetDisks() {
    s.disks = new Set((s.backup && s.backup.disks || []).map((d) => d.disk_id));
    s.name = s.vm ? `${s.vm.name}-restore-${stamp()}`.slice(0, 64) : '';
  }
  await loadBackups();

  // --- validation ------------------------------------------------------------------
  function problem(step) {
    const id = STEPS[step][0];
    if (id === 'source' && !s.backup) return 'Choose a backup to restore.';
    if (id === 'options' && s.kind === 'new' && !NAME_RE.test(s.name)) return 'The new VM needs a name of letters, digits, ".", "_" or "-" (at most 64).';
    if (id === 'disks' && !s.disks.size) return 'Choose at least one disk.';
    if (id === 'review' && s.kind === 'in_place' && s.confirm !== s.vm.name) return `Type ${s.vm.name} to confirm the in-place restore.`;
    return null;
  }

  // --- steps ---------------------------------------------------------------------------
  function select(id, label, items, value, onchange, defLabel) {
    const el = h('select', { class: 'ov-select', id, onchange: (e) => onchange(e.target.value) },
      h('option', { value: '' }, defLabel), (items || []).map((x) => h('option', { value: x.id }, x.name || x.id)));
    el.value = value;
    return [h('label', { for: id }, label), el];
  }

  const views = {
    source() {
      const vmSel = h('select', { class: 'ov-select', id: 'ov-r-vm', onchange: async (e) => {
        s.vm = data.vms.find((v) => v.id === e.target.value) || null; await loadBackups(); draw();
      } }, h('option', { value: '' }, 'Choose a virtual machine'), data.vms.map((v) => h('option', { value: v.id }, v.name)));
      vmSel.value = s.vm ? s.vm.id : '';
      return [h('h3', {}, 'Choose the restore point'),
        h('div', { class: 'ov-form', style: { marginBottom: '12px' } }, h('label', { for: 'ov-r-vm' }, 'Virtual machine'), vmSel),
        !s.vm ? null : !s.backups.length ? emptyState('No restorable backups', `${s.vm.name} has no successful backup yet.`)
          : h('table', { class: 'ov-table', 'data-table': 'restore-points' },
            h('thead', {}, h('tr', {}, h('th', {}, h('span', { class: 'ov-sr' }, 'Choose')), h('th', {}, 'Created'), h('th', {}, 'Mode'), h('th', { class: 'ov-num' }, 'Size'), h('th', {}, 'Disks'))),
            h('tbody', {}, s.backups.map((b) => h('tr', { class: s.backup === b ? 'ov-selected' : '', 'data-backup': b.id },
              h('td', {}, h('input', { type: 'radio', name: 'ov-r-backup', id: `ov-rb-${b.id}`, value: b.id, checked: s.backup === b,
                onchange: () => { s.backup = b; resetDisks(); draw(); } })),
              h('td', {}, h('label', { for: `ov-rb-${b.id}` }, when(b.created_at))), h('td', {}, b.mode),
              h('td', { class: 'ov-num' }, bytes(b.size_bytes)), h('td', {}, (b.disks || []).length)))))];
    },
    kind() {
      const opt = (value, title, text) => h('label', { class: 'ov-radio-card' },
        h('input', { type: 'radio', name: 'ov-r-kind', value, checked: s.kind === value, onchange: () => { s.kind = value; s.confirm = ''; } }),
        h('div', {}, h('strong', {}, title), h('small', {}, text)));
      return [h('h3', {}, 'What should the restore create?'),
        opt('new', 'A new virtual machine', `A copy of ${s.vm.name} as it was at the backup, next to the original. Nothing existing changes.`),
        opt('in_place', `Replace ${s.vm.name} in place`, 'The VM is stopped and its disks are overwritten with the backup. Everything written since is lost.'),
        opt('disks', 'Selected disks only', 'The chosen disks come back as new disks, attached to a VM you pick or left unattached.')];
    },
    options() {
      const rows = [];
      if (s.kind === 'new') {
        const name = h('input', { class: 'ov-input', id: 'ov-r-name', value: s.name, maxlength: '64', 'aria-invalid': NAME_RE.test(s.name) ? 'false' : 'true',
          oninput: (e) => { s.name = e.target.value; e.target.setAttribute('aria-invalid', NAME_RE.test(s.name) ? 'false' : 'true'); } });
        rows.push(h('label', { for: 'ov-r-name' }, 'Name'), name);
        rows.push(...select('ov-r-cluster', 'Cluster', data.clusters, s.cluster_id, (v) => { s.cluster_id = v; }, 'Same as the original VM'));
      }
      if (s.kind !== 'in_place') {
        rows.push(...select('ov-r-sd', 'Storage domain', data.sds, s.storage_domain_id, (v) => { s.storage_domain_id = v; }, 'Same as the original disks'));
      }
      if (s.kind === 'disks') {
        rows.push(...select('ov-r-target', 'Attach to VM', data.vms, s.target_vm_id, (v) => { s.target_vm_id = v; }, 'Leave unattached'));
      } else {
        rows.push(h('span', {}), h('label', { class: 'ov-check' }, h('input', { type: 'checkbox', id: 'ov-r-power', checked: s.power_on, onchange: (e) => { s.power_on = e.target.checked; } }),
          'Start the VM when the restore is done'));
      }
      return [h('h3', {}, s.kind === 'new' ? 'The new virtual machine' : s.kind === 'in_place' ? `Restore into ${s.vm.name}` : 'Where the disks go'),
        h('div', { class: 'ov-form' }, rows),
        (s.kind !== 'in_place' && (!data.clusters || !data.sds))
          ? h('p', { class: 'ov-muted', style: { fontSize: '12px', marginTop: '16px' } }, 'The restore uses the original cluster and storage domains of the backed-up VM.') : null];
    },
    disks() {
      const disks = (s.backup && s.backup.disks) || [];
      return [h('h3', {}, 'Disks to restore'),
        h('table', { class: 'ov-table', 'data-table': 'restore-disks' },
          h('thead', {}, h('tr', {}, h('th', {}, h('span', { class: 'ov-sr' }, 'Restore')), h('th', {}, 'Disk'), h('th', { class: 'ov-num' }, 'Size'), h('th', {}, 'Interface'), h('th', {}, 'Bootable'))),
          h('tbody', {}, disks.map((d) => h('tr', {},
            h('td', {}, h('input', { type: 'checkbox', id: `ov-rd-${d.disk_id}`, checked: s.disks.has(d.disk_id),
              onchange: (e) => { if (e.target.checked) s.disks.add(d.disk_id); else s.disks.delete(d.disk_id); } })),
            h('td', {}, h('label', { for: `ov-rd-${d.disk_id}` }, d.alias || d.disk_id)),
            h('td', { class: 'ov-num' }, bytes(d.provisioned_size)), h('td', {}, d.interface || '—'), h('td', {}, d.bootable ? 'yes' : 'no')))))];
    },
    review() {
      const nm = (list, id, def) => (id ? ((list || []).find((x) => x.id === id) || {}).name || id : def);
      const diskNames = ((s.backup && s.backup.disks) || []).filter((d) => s.disks.has(d.disk_id)).map((d) => d.alias || d.disk_id).join(', ');
      const out = [h('h3', {}, 'Review'),
        h('dl', { class: 'ov-summary' },
          h('dt', {}, 'Source'), h('dd', {}, `${s.vm.name}, backup of ${when(s.backup.created_at)} (${s.backup.mode})`),
          h('dt', {}, 'Restore type'), h('dd', {}, { new: 'New virtual machine', in_place: 'In place (overwrites the VM)', disks: 'Selected disks' }[s.kind]),
          s.kind === 'new' ? [h('dt', {}, 'Name'), h('dd', {}, s.name), h('dt', {}, 'Cluster'), h('dd', {}, nm(data.clusters, s.cluster_id, 'same as the original'))] : null,
          s.kind !== 'in_place' ? [h('dt', {}, 'Storage domain'), h('dd', {}, nm(data.sds, s.storage_domain_id, 'same as the original'))] : null,
          s.kind === 'disks' ? [h('dt', {}, 'Attach to'), h('dd', {}, nm(data.vms, s.target_vm_id, 'unattached'))] : [h('dt', {}, 'Power on'), h('dd', {}, s.power_on ? 'yes' : 'no')],
          h('dt', {}, 'Disks'), h('dd', {}, diskNames))];
      if (s.kind === 'in_place') {
        const inp = h('input', { class: 'ov-input', id: 'ov-r-confirm', autocomplete: 'off', value: s.confirm, oninput: (e) => { s.confirm = e.target.value; drawFoot(); } });
        out.push(alert('danger', `This overwrites ${s.vm.name}`, 'The VM is powered off and its disks are replaced with the backup. Data written after the backup is lost.'),
          h('div', { class: 'ov-form' }, h('label', { for: 'ov-r-confirm' }, `Type ${s.vm.name}`), inp));
      }
      return out;
    },
  };

  // --- drawing ------------------------------------------------------------------------
  function drawNav() {
    clear(nav, STEPS.map(([, label], i) => h('li', { class: i < s.step || s.job ? 'ov-done' : '', 'aria-current': !s.job && i === s.step ? 'step' : null },
      h('span', { class: 'ov-step-n', 'aria-hidden': 'true' }, String(i + 1)), label)),
    h('li', { 'aria-current': s.job ? 'step' : null }, h('span', { class: 'ov-step-n', 'aria-hidden': 'true' }, String(STEPS.length + 1)), 'Progress'));
  }
  function drawFoot() {
    if (s.job) {
      clear(foot, h('button', { class: 'ov-btn', 'data-action': 'close', onclick: close }, 'Close'),
        h('button', { class: 'ov-btn ov-link', onclick: () => { ctx.reveal('ovault-restores'); close(); } }, 'Show in Restores'));
      return;
    }
    const last = s.step === STEPS.length - 1;
    const danger = last && s.kind === 'in_place';
    clear(foot,
      h('button', { class: `ov-btn${danger ? ' ov-danger' : ''}`, 'data-action': last ? 'submit' : 'next', disabled: s.busy || (last && !!problem(s.step)),
        onclick: () => (last ? submit() : next()) }, last ? (danger ? `Overwrite ${s.vm.name}` : 'Restore') : 'Next'),
      h('button', { class: 'ov-btn ov-secondary', 'data-action': 'back', disabled: s.step === 0 || s.busy, onclick: () => { s.step--; s.error = null; draw(); } }, 'Back'),
      h('button', { class: 'ov-btn ov-link', 'data-action': 'cancel', onclick: close }, 'Cancel'));
  }
  function draw() {
    drawNav(); drawFoot();
    if (s.job) return;
    clear(body, s.error ? alert('danger', 'Cannot continue', s.error) : null, views[STEPS[s.step][0]]());
    const f = body.querySelector('input:not([type=hidden]), select');
    if (f) f.focus({ preventScroll: true });
  }
  function next() {
    const p = problem(s.step);
    if (p) { s.error = p; draw(); return; }
    s.error = null; s.step++; draw();
  }

  async function submit() {
    const p = problem(s.step);
    if (p) { s.error = p; draw(); return; }
    const all = ((s.backup && s.backup.disks) || []).map((d) => d.disk_id);
    const req = { kind: s.kind, power_on: s.kind === 'disks' ? undefined : s.power_on };
    if (s.kind === 'new') { req.name = s.name; if (s.cluster_id) req.cluster_id = s.cluster_id; }
    if (s.kind !== 'in_place' && s.storage_domain_id) req.storage_domain_id = s.storage_domain_id;
    if (s.kind === 'disks' && s.target_vm_id) req.target_vm_id = s.target_vm_id;
    if (s.kind === 'disks' || s.disks.size !== all.length) req.disk_ids = [...s.disks];
    s.busy = true; drawFoot();
    try {
      const r = await ctx.client.post(`api/v1/backups/${s.backup.id}/restore`, req);
      s.job = r.job;
      ctx.watchJob(r.job, s.vm.name);
      if (onStarted) onStarted(r.job);
      showProgress();
    } catch (e) {
      s.busy = false; s.error = errorText(e); draw();
    }
  }

  function showProgress() {
    drawNav(); drawFoot();
    const card = jobCard(s.job, { rates: ctx.rates });
    const result = h('div', { 'data-region': 'result' });
    clear(body, h('h3', {}, 'Restoring'), h('p', { class: 'ov-muted' }, 'You can close this window: the restore continues and the portal tells you when it ends.'),
      h('div', { class: 'ov-card' }, card), result);
    const live = ctx.live();
    live.watch(s.job.id);
    live.onJob((j) => {
      if (j.id !== s.job.id) return;
      s.job = j;
      renderJob(card, j, { rates: ctx.rates });
      if (TERMINAL.has(j.state)) {
        const err = j.error || (j.machines || []).map((x) => x.error).filter(Boolean)[0];
        clear(result, j.state === 'succeeded'
          ? alert('success', 'Restore finished', s.kind === 'new' ? `The new VM ${s.name} is ready in the Virtual Machines list.` : 'The disks are restored.')
          : alert(j.state === 'canceled' ? 'warning' : 'danger', `Restore ${j.state}`, err || ''));
      }
    });
  }

  draw();
}
