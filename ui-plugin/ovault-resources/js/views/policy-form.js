// The policy form (a modal on the Policies page): create or edit a policy.
//
// The schedule field shows the next fire times in the user's time zone as it
// is typed: the server computes them (GET /api/v1/policies/next-runs, the same
// validation as a saved policy), the browser only formats them. A 422 from the
// API (problem+json) is shown next to the field its detail names.

import { t } from '../messages.js';
import { h, clear, alert, modal, when, errorText } from '../ui.js';

export const KEEP = ['keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly', 'keep_monthly', 'keep_yearly'];
const NOTIFY_ON = ['failure', 'success', 'summary'];

export function userTimeZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (e) { return 'UTC'; }
}

function zones() {
  try { return Intl.supportedValuesOf('timeZone'); } catch (e) { return ['UTC']; }
}

const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);

// Which form field a 422's detail is about: the API's messages start with the
// field's name (`schedule …`, `retention.keep_daily …`, `rules.name_regex …`).
export function fieldOf(detail) {
  const d = String(detail || '');
  if (/^(unknown time zone|timezone\b)/.test(d)) return 'timezone';
  const m = d.match(/^(retention\.keep_\w+|rules\.\w+|notify\.\w+|schedule|name|vm_ids|window_minutes|full_every_days|target_id|enabled)\b/);
  if (m) return m[1].replace(/^retention\./, '').replace(/^notify\.on$/, 'notify_on').replace(/^notify\.emails$/, 'emails')
    .replace(/^rules\./, '');
  if (/^(unknown retention|retention)/.test(d)) return 'keep_last';
  if (/^a policy named/.test(d)) return 'name';
  return null;
}

// Opens the form; resolves with the saved policy, or null when closed.
export function openPolicyForm(ctx, { policy = null, vms = [], targets = [], clusters = [] } = {}) {
  return new Promise((resolve) => {
    const p = policy || {};
    const r = p.retention || {};
    const rules = p.rules || {};
    const notify = p.notify || {};
    const errs = {};
    let saved = null;

    const input = (name, attrs = {}) => h('input', { class: 'ov-input', id: `ov-p-${name}`, name, autocomplete: 'off', ...attrs });
    const f = {
      name: input('name', { value: p.name || '', maxlength: '100', required: true }),
      schedule: input('schedule', { value: p.schedule || '0 2 * * *', class: 'ov-input ov-mono', spellcheck: 'false' }),
      timezone: input('timezone', { value: p.timezone || userTimeZone(), list: 'ov-p-zones' }),
      tags: input('tags', { value: (rules.tags || []).join(', '), placeholder: t('policy.tagsPlaceholder') }),
      name_regex: input('name_regex', { value: rules.name_regex || '', class: 'ov-input ov-mono' }),
      exclude_name_regex: input('exclude_name_regex', { value: rules.exclude_name_regex || '', class: 'ov-input ov-mono' }),
      window_minutes: input('window_minutes', { type: 'number', min: '1', value: String(p.window_minutes ?? 60) }),
      full_every_days: input('full_every_days', { type: 'number', min: '1', value: p.full_every_days ? String(p.full_every_days) : '', placeholder: t('policy.never') }),
      emails: input('emails', { value: (notify.emails || []).join(', '), placeholder: t('policy.emailsPlaceholder') }),
      enabled: h('input', { type: 'checkbox', id: 'ov-p-enabled', name: 'enabled', checked: p.enabled !== false }),
    };
    for (const k of KEEP) f[k] = input(k, { type: 'number', min: '0', value: r[k] ? String(r[k]) : '', style: { width: '90px' } });
    const target = h('select', { class: 'ov-select', id: 'ov-p-target_id', name: 'target_id' },
      h('option', { value: '' }, t('policy.defaultTarget')),
      targets.map((x) => h('option', { value: x.id, selected: x.id === p.target_id }, x.name || x.id)));
    f.target_id = target;
    const chosen = new Set(p.vm_ids || []);
    const vmBoxes = vms.map((v) => h('label', { class: 'ov-check', 'data-vm': v.id },
      h('input', { type: 'checkbox', value: v.id, checked: chosen.has(v.id) }), v.name));
    const vmList = h('div', { id: 'ov-p-vm_ids', class: 'ov-checklist', role: 'group', 'aria-label': t('policy.vms') }, vmBoxes);
    // many VMs: a filter over the list (checked ones stay checked while hidden)
    const vmFilter = h('input', { class: 'ov-input', type: 'search', placeholder: t('policy.vmFilter'), 'aria-label': t('policy.vmFilter'),
      oninput: () => { const q = vmFilter.value.trim().toLowerCase(); for (const l of vmBoxes) l.style.display = q && !l.textContent.toLowerCase().includes(q) ? 'none' : ''; } });
    const inClusters = new Set(rules.cluster_ids || []);
    const clusterBoxes = clusters.map((c) => h('label', { class: 'ov-check ov-inline', 'data-cluster': c.id },
      h('input', { type: 'checkbox', value: c.id, checked: inClusters.has(c.id) }), c.name || c.id));
    // a stored cluster the engine no longer lists stays in the rules
    const unknownClusters = [...inClusters].filter((id) => !clusters.some((c) => c.id === id));
    const onBoxes = NOTIFY_ON.map((o) => h('label', { class: 'ov-check ov-inline' },
      h('input', { type: 'checkbox', value: o, checked: (notify.on || ['failure']).includes(o) }), t(`policy.notify.${o}`)));
    const notifyOn = h('div', { id: 'ov-p-notify_on', role: 'group', 'aria-label': t('policy.notifyOn') }, onBoxes);
    const nextRuns = h('div', { class: 'ov-help', 'data-region': 'next-runs', 'aria-live': 'polite' });
    const formError = h('div');

    // one error line under each field, filled from a 422
    const errLine = (name) => { errs[name] = h('div', { class: 'ov-field-error', 'data-error-for': name, role: 'alert' }); return errs[name]; };
    const row = (name, label, control, help) => [
      h('label', { for: `ov-p-${name}` }, label), control,
      help ? h('div', { class: 'ov-help' }, help) : null, errLine(name)];

    function clearErrors() {
      clear(formError);
      for (const [k, el] of Object.entries(errs)) { clear(el); if (f[k]) f[k].removeAttribute('aria-invalid'); }
    }
    function showError(field, text) {
      const el = field && errs[field];
      if (!el) { clear(formError, alert('danger', t('policy.saveFailed'), text)); return; }
      clear(el, text);
      const ctl = f[field] || document.getElementById(`ov-p-${field}`);
      if (ctl) { ctl.setAttribute('aria-invalid', 'true'); ctl.focus(); }
    }

    // next runs, asked of the server a moment after the last keystroke
    let timer = null; let seq = 0;
    async function refreshRuns() {
      const mine = ++seq;
      const qs = new URLSearchParams({ schedule: f.schedule.value.trim(), timezone: f.timezone.value.trim(), count: '5' });
      try {
        const res = await ctx.client.get(`api/v1/policies/next-runs?${qs}`);
        if (mine !== seq) return;
        clear(errs.schedule); f.schedule.removeAttribute('aria-invalid');
        clear(errs.timezone); f.timezone.removeAttribute('aria-invalid');
        clear(nextRuns, h('span', {}, t('policy.nextRunsIn', { zone: userTimeZone() })), ' ',
          h('ol', { class: 'ov-runs' }, res.next_runs.map((x) => h('li', { 'data-time': x }, when(x)))));
      } catch (e) {
        if (mine !== seq) return;
        clear(nextRuns);
        if (e.status === 422) showError(fieldOf(e.detail) === 'timezone' ? 'timezone' : 'schedule', e.detail || e.message);
        else clear(nextRuns, errorText(e));
      }
    }
    const later = () => { clearTimeout(timer); timer = setTimeout(refreshRuns, 300); };
    f.schedule.addEventListener('input', later);
    f.timezone.addEventListener('change', later);
    f.timezone.addEventListener('input', later);

    const num = (el) => (el.value.trim() === '' ? null : Number(el.value));
    function body() {
      const b = {
        name: f.name.value.trim(), schedule: f.schedule.value.trim(), timezone: f.timezone.value.trim(),
        retention: Object.fromEntries(KEEP.filter((k) => f[k].value.trim() !== '').map((k) => [k, num(f[k])])),
        vm_ids: vmBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value),
        rules: {
          tags: list(f.tags.value),
          cluster_ids: unknownClusters.concat(clusterBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value)),
          name_regex: f.name_regex.value.trim() || null, exclude_name_regex: f.exclude_name_regex.value.trim() || null,
        },
        window_minutes: num(f.window_minutes), full_every_days: num(f.full_every_days),
        target_id: target.value || null, enabled: f.enabled.checked,
        notify: { emails: list(f.emails.value), on: onBoxes.map((l) => l.querySelector('input')).filter((i) => i.checked).map((i) => i.value) },
      };
      if (b.window_minutes === null) delete b.window_minutes;
      return b;
    }

    const save = h('button', { class: 'ov-btn', 'data-action': 'save', onclick: submit }, policy ? t('policy.save') : t('policy.create'));
    async function submit() {
      clearErrors();
      save.disabled = true;
      try {
        saved = policy ? await ctx.client.patch(`api/v1/policies/${policy.id}`, body()) : await ctx.client.post('api/v1/policies', body());
        ctx.toast('success', t(policy ? 'policy.saved' : 'policy.created', { name: saved.name }));
        m.close();
      } catch (e) {
        if (e.status === 422 || e.status === 409) showError(fieldOf(e.detail), e.detail || e.message);
        else clear(formError, alert('danger', t('policy.saveFailed'), errorText(e)));
      } finally { save.disabled = false; }
    }

    const m = modal({
      title: policy ? t('policy.editTitle', { name: policy.name }) : t('policy.newTitle'),
      body: h('div', { class: 'ov-policy-form', 'data-form': 'policy' }, formError,
        h('datalist', { id: 'ov-p-zones' }, zones().map((z) => h('option', { value: z }))),
        h('div', { class: 'ov-form' },
          row('name', t('col.name'), f.name),
          row('schedule', t('policy.schedule'), f.schedule, t('policy.scheduleHelp')),
          h('span'), nextRuns,
          row('timezone', t('policy.timezone'), f.timezone, t('policy.timezoneHelp')),
          h('span', { class: 'ov-form-label' }, t('policy.retention')),
          h('div', { class: 'ov-keep' }, KEEP.map((k) => h('label', { for: `ov-p-${k}` }, h('span', {}, t(`rule.${k}`)), f[k]))),
          h('div', { class: 'ov-help' }, t('policy.retentionHelp')),
          KEEP.map((k) => errLine(k)),
          h('span', { class: 'ov-form-label' }, t('policy.vms')), h('div', {}, vms.length > 8 ? vmFilter : null, vmList), errLine('vm_ids'),
          row('tags', t('policy.tags'), f.tags, t('policy.tagsHelp')),
          clusterBoxes.length ? [h('span', { class: 'ov-form-label' }, t('policy.clusters')),
            h('div', { id: 'ov-p-cluster_ids', role: 'group', 'aria-label': t('policy.clusters') }, clusterBoxes),
            h('div', { class: 'ov-help' }, t('policy.clustersHelp')), errLine('cluster_ids')] : null,
          row('name_regex', t('policy.nameRegex'), f.name_regex, t('policy.nameRegexHelp')),
          row('exclude_name_regex', t('policy.excludeRegex'), f.exclude_name_regex, t('policy.excludeRegexHelp')),
          row('window_minutes', t('policy.window'), f.window_minutes, t('policy.windowHelp')),
          row('full_every_days', t('policy.fullEvery'), f.full_every_days, t('policy.fullEveryHelp')),
          targets.length ? row('target_id', t('policy.target'), target) : null,
          row('emails', t('policy.emails'), f.emails),
          h('span', { class: 'ov-form-label' }, t('policy.notifyOn')), notifyOn, errLine('notify_on'),
          h('span'), h('label', { class: 'ov-check' }, f.enabled, t('policy.enabled')))),
      footer: [save, h('button', { class: 'ov-btn ov-link', 'data-action': 'cancel', onclick: () => m.close() }, t('action.cancel'))],
      onClose: () => resolve(saved),
    });
    f.name.focus();
    refreshRuns();
  });
}
