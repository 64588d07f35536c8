// Restore wizard: backup → restore type → options → disks → review → progress.
//
// POST /api/v1/backups/{id}/restore {"kind":"new"|"in_place"|"disks", "name",
// "cluster_id", "storage_domain_id", "disk_ids", "target_vm_id", "power_on"}.
// Clusters and storage domains come from GET /api/v1/clusters and
// /api/v1/storage-domains ({"items":[{"id","name"}]}); without them the
// wizard offers "same as the original VM", which the orchestrator defaults to.
// An in-place restore overwrites the VM: the user types its name to confirm.

import { TERMINAL } from '../live.js';
import { place } from '../places.js';
import { t } from '../messages.js';
import { h, clear, modal, alert, bytes, when, jobCard, renderJob, emptyState, errorText } from '../ui.js';

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const STEPS = ['source', 'kind', 'options', 'disks', 'review'];  // labels: messages.js `wizard.step.<id>`

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
  const nav = h('ol', { class: 'ov-wizard-nav', 'aria-label': t('wizard.steps') });
  const body = h('div', { class: 'ov-wizard-body', 'aria-live': 'polite' });
  const foot = h('div', { class: 'ov-wizard-foot' });
  const wiz = h('div', { class: 'ov-wizard', 'data-wizard': 'restore' }, nav, body);
  let m = null;
  const root = h('div', { class: container ? 'ov-dialog-page' : '' }, wiz, foot);
  const close = () => { if (m) m.close(); else if (onClose) onClose(); };
  if (container) clear(container, root);
  else m = modal({ title: vm ? t('restore.titleOf', { name: vm.name }) : t('button.restore'), body: root, onClose: () => onClose && onClose() });
  if (m) { m.el.style.maxWidth = '960px'; m.el.querySelector('.ov-modal-body').style.padding = '0'; }

  clear(body, h('div', { class: 'ov-muted' }, t('loading')));
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
    const id = STEPS[step];
    if (id === 'source' && !s.backup) return t('wizard.needBackup');
    if (id === 'options' && s.kind === 'new' && !NAME_RE.test(s.name)) return t('wizard.needName');
    if (id === 'disks' && !s.disks.size) return t('wizard.needDisk');
    if (id === 'review' && s.kind === 'in_place' && s.confirm !== s.vm.name) return t('wizard.needConfirm', { name: s.vm.name });
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
      } }, h('option', { value: '' }, t('wizard.chooseVm')), data.vms.map((v) => h('option', { value: v.id }, v.name)));
      vmSel.value = s.vm ? s.vm.id : '';
      return [h('h3', {}, t('wizard.sourceTitle')),
        h('div', { class: 'ov-form', style: { marginBottom: '12px' } }, h('label', { for: 'ov-r-vm' }, t('col.vm')), vmSel),
        !s.vm ? null : !s.backups.length ? emptyState(t('wizard.noBackups'), t('wizard.noBackupsDetail', { name: s.vm.name }))
          : h('table', { class: 'ov-table', 'data-table': 'restore-points' },
            h('thead', {}, h('tr', {}, h('th', {}, h('span', { class: 'ov-sr' }, t('wizard.choose'))), h('th', {}, t('col.created')), h('th', {}, t('col.mode')), h('th', { class: 'ov-num' }, t('col.size')), h('th', {}, t('col.disks')))),
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
      return [h('h3', {}, t('wizard.kindTitle')),
        opt('new', t('wizard.kindNew'), t('wizard.kindNewDetail', { name: s.vm.name })),
        opt('in_place', t('wizard.kindInPlace', { name: s.vm.name }), t('wizard.kindInPlaceDetail')),
        opt('disks', t('wizard.kindDisks'), t('wizard.kindDisksDetail'))];
    },
    options() {
      const rows = [];
      if (s.kind === 'new') {
        const name = h('input', { class: 'ov-input', id: 'ov-r-name', value: s.name, maxlength: '64', 'aria-invalid': NAME_RE.test(s.name) ? 'false' : 'true',
          oninput: (e) => { s.name = e.target.value; e.target.setAttribute('aria-invalid', NAME_RE.test(s.name) ? 'false' : 'true'); } });
        rows.push(h('label', { for: 'ov-r-name' }, t('col.name')), name);
        rows.push(...select('ov-r-cluster', t('wizard.cluster'), data.clusters, s.cluster_id, (v) => { s.cluster_id = v; }, t('wizard.sameCluster')));
      }
      if (s.kind !== 'in_place') {
        rows.push(...select('ov-r-sd', t('wizard.storageDomain'), data.sds, s.storage_domain_id, (v) => { s.storage_domain_id = v; }, t('wizard.sameStorage')));
      }
      if (s.kind === 'disks') {
        rows.push(...select('ov-r-target', t('wizard.attachTo'), data.vms, s.target_vm_id, (v) => { s.target_vm_id = v; }, t('wizard.unattached')));
      } else {
        rows.push(h('span', {}), h('label', { class: 'ov-check' }, h('input', { type: 'checkbox', id: 'ov-r-power', checked: s.power_on, onchange: (e) => { s.power_on = e.target.checked; } }),
          t('wizard.powerOn')));
      }
      return [h('h3', {}, s.kind === 'new' ? t('wizard.optionsNew') : s.kind === 'in_place' ? t('wizard.optionsInPlace', { name: s.vm.name }) : t('wizard.optionsDisks')),
        h('div', { class: 'ov-form' }, rows),
        (s.kind !== 'in_place' && (!data.clusters || !data.sds))
          ? h('p', { class: 'ov-muted', style: { fontSize: '12px', marginTop: '16px' } }, t('wizard.originalPlacement')) : null];
    },
    disks() {
      const disks = (s.backup && s.backup.disks) || [];
      return [h('h3', {}, t('wizard.disksTitle')),
        h('table', { class: 'ov-table', 'data-table': 'restore-disks' },
          h('thead', {}, h('tr', {}, h('th', {}, h('span', { class: 'ov-sr' }, t('button.restore'))), h('th', {}, t('col.disk')), h('th', { class: 'ov-num' }, t('col.size')), h('th', {}, t('col.interface')), h('th', {}, t('col.bootable')))),
          h('tbody', {}, disks.map((d) => h('tr', {},
            h('td', {}, h('input', { type: 'checkbox', id: `ov-rd-${d.disk_id}`, checked: s.disks.has(d.disk_id),
              onchange: (e) => { if (e.target.checked) s.disks.add(d.disk_id); else s.disks.delete(d.disk_id); } })),
            h('td', {}, h('label', { for: `ov-rd-${d.disk_id}` }, d.alias || d.disk_id)),
            h('td', { class: 'ov-num' }, bytes(d.provisioned_size)), h('td', {}, d.interface || t('none')), h('td', {}, d.bootable ? t('yes') : t('no'))))))];
    },
    review() {
      const nm = (list, id, def) => (id ? ((list || []).find((x) => x.id === id) || {}).name || id : def);
      const diskNames = ((s.backup && s.backup.disks) || []).filter((d) => s.disks.has(d.disk_id)).map((d) => d.alias || d.disk_id).join(', ');
      const out = [h('h3', {}, t('wizard.step.review')),
        h('dl', { class: 'ov-summary' },
          h('dt', {}, t('wizard.source')), h('dd', {}, t('wizard.sourceValue', { name: s.vm.name, when: when(s.backup.created_at), mode: s.backup.mode })),
          h('dt', {}, t('wizard.step.kind')), h('dd', {}, t(`wizard.kindSummary.${s.kind}`)),
          s.kind === 'new' ? [h('dt', {}, t('col.name')), h('dd', {}, s.name), h('dt', {}, t('wizard.cluster')), h('dd', {}, nm(data.clusters, s.cluster_id, t('wizard.sameAsOriginal')))] : null,
          s.kind !== 'in_place' ? [h('dt', {}, t('wizard.storageDomain')), h('dd', {}, nm(data.sds, s.storage_domain_id, t('wizard.sameAsOriginal')))] : null,
          s.kind === 'disks' ? [h('dt', {}, t('wizard.attachToShort')), h('dd', {}, nm(data.vms, s.target_vm_id, t('wizard.unattachedShort')))] : [h('dt', {}, t('wizard.powerOnShort')), h('dd', {}, s.power_on ? t('yes') : t('no'))],
          h('dt', {}, t('col.disks')), h('dd', {}, diskNames))];
      if (s.kind === 'in_place') {
        const inp = h('input', { class: 'ov-input', id: 'ov-r-confirm', autocomplete: 'off', value: s.confirm, oninput: (e) => { s.confirm = e.target.value; drawFoot(); } });
        out.push(alert('danger', t('wizard.overwriteTitle', { name: s.vm.name }), t('wizard.overwriteDetail')),
          h('div', { class: 'ov-form' }, h('label', { for: 'ov-r-confirm' }, t('wizard.typeName', { name: s.vm.name })), inp));
      }
      return out;
    },
  };

  // --- drawing ------------------------------------------------------------------------
  function drawNav() {
    clear(nav, STEPS.map((id, i) => h('li', { class: i < s.step || s.job ? 'ov-done' : '', 'aria-current': !s.job && i === s.step ? 'step' : null },
      h('span', { class: 'ov-step-n', 'aria-hidden': 'true' }, String(i + 1)), t(`wizard.step.${id}`))),
    h('li', { 'aria-current': s.job ? 'step' : null }, h('span', { class: 'ov-step-n', 'aria-hidden': 'true' }, String(STEPS.length + 1)), t('wizard.step.progress')));
  }
  function drawFoot() {
    if (s.job) {
      clear(foot, h('button', { class: 'ov-btn', 'data-action': 'close', onclick: close }, t('action.close')),
        h('button', { class: 'ov-btn ov-link', onclick: () => { ctx.reveal(place('restores').token); close(); } }, t('wizard.showInRestores')));
      return;
    }
    const last = s.step === STEPS.length - 1;
    const danger = last && s.kind === 'in_place';
    clear(foot,
      h('button', { class: `ov-btn${danger ? ' ov-danger' : ''}`, 'data-action': last ? 'submit' : 'next', disabled: s.busy || (last && !!problem(s.step)),
        onclick: () => (last ? submit() : next()) }, last ? (danger ? t('wizard.overwrite', { name: s.vm.name }) : t('button.restore')) : t('action.next')),
      h('button', { class: 'ov-btn ov-secondary', 'data-action': 'back', disabled: s.step === 0 || s.busy, onclick: () => { s.step--; s.error = null; draw(); } }, t('action.back')),
      h('button', { class: 'ov-btn ov-link', 'data-action': 'cancel', onclick: close }, t('action.cancel')));
  }
  function draw() {
    drawNav(); drawFoot();
    if (s.job) return;
    clear(body, s.error ? alert('danger', t('wizard.cannotContinue'), s.error) : null, views[STEPS[s.step]]());
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
    const card = jobCard(s.job, {});
    const result = h('div', { 'data-region': 'result' });
    clear(body, h('h3', {}, t('wizard.restoring')), h('p', { class: 'ov-muted' }, t('wizard.restoringDetail')),
      h('div', { class: 'ov-card' }, card), result);
    const live = ctx.live();
    live.watch(s.job.id);
    live.onJob((j) => {
      if (j.id !== s.job.id) return;
      s.job = j;
      renderJob(card, j, {});
      if (TERMINAL.has(j.state)) {
        const err = j.error || (j.machines || []).map((x) => x.error).filter(Boolean)[0];
        clear(result, j.state === 'succeeded'
          ? alert('success', t('wizard.finished'), s.kind === 'new' ? t('wizard.finishedNew', { name: s.name }) : t('wizard.finishedDisks'))
          : alert(j.state === 'canceled' ? 'warning' : 'danger', t('wizard.ended', { state: t(`state.${j.state}`) }), err || ''));
      }
    });
  }

  draw();
}
