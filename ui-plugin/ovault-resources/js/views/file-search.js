// File search of a VM's backups (in the VM's Backups tab): which backups hold a
// file matching a name, with each version's size and modification time
// (docs/file-restore.md, "Search").
//
// The server answers at once from the backup disks it has indexed and indexes
// the others in the background; while it does, a bar shows how many are done
// (polling the indexing resource the answer names) and the search runs again
// by itself when they are.

import { t } from '../messages.js';
import { h, clear, alert, bytes, when, errorText, progressBar, short } from '../ui.js';

const POLL_MS = 2000;

function rel(url) { return url.replace(/^\/+/, ''); }

export function fileSearch(ctx, vmId) {
  const input = h('input', { class: 'ov-input', type: 'search', 'data-files': 'search-name', placeholder: t('files.searchPlaceholder'),
    'aria-label': t('files.searchLabel'), style: { width: '280px' }, onkeydown: (e) => { if (e.key === 'Enter') run(); } });
  const button = h('button', { class: 'ov-btn ov-secondary', 'data-action': 'search-files', onclick: () => run() }, t('files.search'));
  const status = h('div', { 'aria-live': 'polite', 'data-files': 'search-status' });
  const bar = progressBar('files-indexing', t('files.indexing'), { small: true });
  bar.hidden = true;
  const results = h('div', { class: 'ov-table-wrap', 'data-files': 'search-results' });
  const el = h('section', { class: 'ov-card ov-card-body', 'data-region': 'file-search', 'aria-label': t('files.searchTitle'), style: { marginBottom: '12px' } },
    h('div', { class: 'ov-toolbar', role: 'search' }, h('strong', {}, t('files.searchTitle')), input, button), status, bar, results);
  let seq = 0;

  function showProgress(p) {
    const done = (p.done || 0) + (Array.isArray(p.failed) ? p.failed.length : (p.failed || 0));
    const pct = p.total ? Math.min(100, Math.floor((done / p.total) * 100)) : 0;
    bar.hidden = false;
    bar.dataset.state = p.state;
    const b = bar.querySelector('.ov-progress-bar');
    b.setAttribute('aria-valuenow', String(pct));
    b.querySelector('.ov-progress-fill').style.width = `${pct}%`;
    bar.querySelector('.ov-progress-status').textContent = t('files.indexedOf', { done, total: p.total });
    bar.querySelector('.ov-progress-meta').textContent = t('files.indexingNote');
  }

  function render(r) {
    const items = r.items || [];
    const notes = [];
    const failed = (r.not_indexed || []).filter((x) => x.state === 'failed');
    if (failed.length) {
      notes.push(alert('warning', t('files.indexFailed', { n: failed.length }),
        failed.map((x) => `${short(x.backup_id)} ${x.disk_alias || short(x.disk_id)}: ${x.error || ''}`).join('; ')));
    }
    if (r.truncated) notes.push(alert('info', t('files.searchTruncated')));
    if (!items.length) {
      notes.push(h('div', { class: 'ov-muted', 'data-files': 'search-empty' },
        t(r.complete ? 'files.searchNone' : 'files.searchNoneYet', { name: r.name, n: r.backups_searched })));
    }
    clear(status, ...notes);
    clear(results, items.length ? h('table', { class: 'ov-table', 'data-table': 'file-search' },
      h('thead', {}, h('tr', {}, h('th', {}, t('files.path')), h('th', {}, t('col.disk')), h('th', {}, t('files.backupCol')),
        h('th', {}, t('files.type')), h('th', { class: 'ov-num' }, t('col.size')), h('th', {}, t('files.modified')))),
      h('tbody', {}, items.flatMap((it) => it.versions.map((v, i) => h('tr', { 'data-path': it.path, 'data-version-of': v.backup_id },
        h('td', {}, i === 0 ? it.path : ''), h('td', { class: 'ov-muted' }, i === 0 ? (it.disk_alias || short(it.disk_id)) : ''),
        h('td', { class: 'ov-nowrap', title: v.created_at || '' }, v.created_at ? when(v.created_at) : short(v.backup_id)),
        h('td', { class: 'ov-muted' }, t(`files.kind.${v.type}`, {}, v.type)),
        h('td', { class: 'ov-num ov-nowrap' }, v.size === null || v.size === undefined ? t('none') : bytes(v.size)),
        h('td', { class: 'ov-nowrap', title: v.mtime || '' }, v.mtime ? when(v.mtime) : t('none'))))))) : null);
  }

  async function follow(url, mine, name) {
    for (;;) {
      await new Promise((resolve) => { setTimeout(resolve, POLL_MS); });
      if (mine !== seq || !el.isConnected) return;
      let p;
      try { p = await ctx.client.get(rel(url)); } catch (e) {
        clear(status, alert('warning', t('files.indexingFailed'), errorText(e)));
        return;
      }
      if (mine !== seq) return;
      showProgress(p);
      if (p.state !== 'running') { search(name, mine, false); return; }
    }
  }

  async function search(name, mine, followIndexing) {
    let r;
    try {
      r = await ctx.client.get(`api/v1/vms/${encodeURIComponent(vmId)}/files?name=${encodeURIComponent(name)}`);
    } catch (e) {
      if (mine === seq) { bar.hidden = true; clear(status, alert('danger', t('files.searchFailed'), errorText(e))); clear(results); }
      return;
    }
    if (mine !== seq) return;
    render(r);
    if (r.indexing && r.indexing.state === 'running' && followIndexing) {
      showProgress(r.indexing);
      follow(r.indexing.url, mine, name);
    } else bar.hidden = true;
  }

  function run() {
    const name = input.value.trim();
    if (!name) { input.focus(); return; }
    seq += 1;
    clear(status, h('div', { class: 'ov-muted' }, t('loading')));
    search(name, seq, true);
  }

  return el;
}
