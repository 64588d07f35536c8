// File browser of one backup (the "Files" button in a VM's Backups tab):
// pick a disk, walk its file systems and folders, download a file, the
// current folder or the selected entries as a tar.gz (docs/file-restore.md).
//
// Paths are /<file system>/<path>: the root lists the disk's file systems
// (sda1, vg0/root, ...). Links are shown with their target, never followed.
// Downloads go through fetch (the API needs the bearer token) and are handed
// to the browser as a blob with the download attribute.

import { ApiError } from '../api.js';
import { t } from '../messages.js';
import { h, clear, alert, bytes, when, errorText, modal, short } from '../ui.js';

const FOLDERS = new Set(['directory', 'filesystem', 'volume_group']);

function filesBase(backup, diskId) {
  return `api/v1/backups/${encodeURIComponent(backup.id)}/disks/${encodeURIComponent(diskId)}/files`;
}

// Fetch `path` and save the answer as `filename` (a blob behind a download link).
export async function saveDownload(client, method, path, body, filename) {
  const headers = {};
  const tok = client.getToken();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const url = client.url(path);
  let r;
  try {
    r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, { title: t('error.network'), detail: t('error.unreachable', { reason: e.message }) }, url);
  }
  if (!r.ok) {
    let problem = null;
    try { problem = await r.json(); } catch (e) { problem = null; }
    throw new ApiError(r.status, problem, url);
  }
  const blob = await r.blob();
  const href = URL.createObjectURL(blob);
  const a = h('a', { href, download: filename, style: { display: 'none' } });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(href); a.remove(); }, 60000);
  return blob.size;
}

function kindLabel(e) {
  if (e.type === 'filesystem') return t('files.kind.filesystem', { fstype: e.fstype || '' });
  return t(`files.kind.${e.type}`, {}, e.type);
}

export function openFileBrowser(ctx, backup) {
  const disks = backup.disks || [];
  let diskId = disks.length ? disks[0].disk_id : null;
  let path = '/';
  const selected = new Set();
  const diskSel = disks.length > 1 ? h('select', { class: 'ov-select', 'aria-label': t('col.disk'), 'data-files': 'disk',
    onchange: () => { diskId = diskSel.value; go('/'); } },
  disks.map((d) => h('option', { value: d.disk_id }, d.alias || short(d.disk_id)))) : null;
  const crumbs = h('nav', { class: 'ov-crumbs', 'aria-label': t('files.location'), 'data-files': 'crumbs' });
  const status = h('div', { 'aria-live': 'polite' });
  const list = h('div', { class: 'ov-table-wrap ov-files', 'data-files': 'list' });
  const archiveFolder = h('button', { class: 'ov-btn ov-secondary', 'data-action': 'archive-folder', onclick: () => archive([path]) }, t('files.downloadFolder'));
  const archiveSel = h('button', { class: 'ov-btn', 'data-action': 'archive-selected', disabled: true, onclick: () => archive([...selected]) }, t('files.downloadSelected'));

  const m = modal({
    title: t('files.title', { name: backup.vm_name || short(backup.vm_id), when: when(backup.created_at) }),
    body: [h('div', { class: 'ov-toolbar' }, diskSel, crumbs), status, list],
    footer: [archiveSel, archiveFolder, h('button', { class: 'ov-btn ov-link', onclick: () => m.close() }, t('action.close'))],
  });
  m.el.classList.add('ov-wide');
  m.el.setAttribute('data-dialog', 'files');

  function showCrumbs() {
    const parts = path.split('/').filter(Boolean);
    const items = [h('a', { href: '#', 'data-path': '/', onclick: (e) => { e.preventDefault(); go('/'); } }, t('files.root'))];
    parts.forEach((p, i) => {
      const to = `/${parts.slice(0, i + 1).join('/')}`;
      items.push(h('span', { class: 'ov-muted', 'aria-hidden': 'true' }, ' / '),
        i === parts.length - 1 ? h('span', { 'aria-current': 'location' }, p)
          : h('a', { href: '#', 'data-path': to, onclick: (e) => { e.preventDefault(); go(to); } }, p));
    });
    clear(crumbs, items);
    archiveFolder.disabled = path === '/';  // the whole disk: pick file systems instead
  }

  function syncSelection() {
    archiveSel.disabled = selected.size === 0;
    archiveSel.textContent = selected.size ? t('files.downloadSelectedN', { n: selected.size }) : t('files.downloadSelected');
  }

  function row(e) {
    const folder = FOLDERS.has(e.type);
    const box = h('input', { type: 'checkbox', 'aria-label': t('files.select', { name: e.name }), checked: selected.has(e.path),
      disabled: e.type === 'volume_group', onchange: () => { if (box.checked) selected.add(e.path); else selected.delete(e.path); syncSelection(); } });
    const name = folder ? h('a', { href: '#', 'data-open': e.path, onclick: (ev) => { ev.preventDefault(); go(e.path); } }, e.name)
      : h('span', {}, e.name, e.type === 'symlink' ? h('span', { class: 'ov-muted' }, ` → ${e.target || ''}`) : null);
    return h('tr', { 'data-entry': e.path, 'data-type': e.type },
      h('td', {}, box), h('td', {}, name), h('td', { class: 'ov-muted' }, kindLabel(e)),
      h('td', { class: 'ov-num ov-nowrap' }, e.size === null || e.size === undefined || folder && e.type !== 'filesystem' ? t('none') : bytes(e.size)),
      h('td', { class: 'ov-muted' }, e.mode || t('none')),
      h('td', { class: 'ov-nowrap', title: e.mtime || '' }, e.mtime ? when(e.mtime) : t('none')),
      h('td', { class: 'ov-actions' }, e.type === 'file'
        ? h('button', { class: 'ov-btn ov-link', 'data-action': 'download', 'aria-label': t('files.downloadLabel', { name: e.name }), onclick: (ev) => download(e, ev.currentTarget) }, t('files.download'))
        : null));
  }

  async function go(to) {
    path = to;
    selected.clear();
    syncSelection();
    showCrumbs();
    if (!diskId) { clear(list, alert('warning', t('files.noDisks'))); return; }
    clear(status, h('div', { class: 'ov-muted' }, path === '/' ? t('files.opening') : t('loading')));
    list.setAttribute('aria-busy', 'true');
    try {
      const r = await ctx.client.request('GET', `${filesBase(backup, diskId)}?path=${encodeURIComponent(path)}`, undefined, { timeoutMs: 180000 });
      if (to !== path) return;
      clear(status, ...Object.entries(r.unmountable || {}).map(([fs, why]) => alert('warning', t('files.unmountable', { name: fs }), why)));
      const items = r.items || [];
      clear(list, items.length ? h('table', { class: 'ov-table', 'data-table': 'files' },
        h('thead', {}, h('tr', {}, h('th', {}, h('span', { class: 'ov-sr' }, t('files.selectCol'))), h('th', {}, t('col.name')), h('th', {}, t('files.type')),
          h('th', { class: 'ov-num' }, t('col.size')), h('th', {}, t('files.mode')), h('th', {}, t('files.modified')), h('th', { class: 'ov-actions' }, h('span', { class: 'ov-sr' }, t('col.actions'))))),
        h('tbody', {}, items.map(row))) : h('div', { class: 'ov-muted', style: { padding: '12px' } }, t('files.empty')));
    } catch (e) {
      clear(status, alert('danger', t('files.loadFailed'), errorText(e)));
      clear(list);
    } finally { list.removeAttribute('aria-busy'); }
  }

  async function download(e, btn) {
    btn.disabled = true;
    try {
      await saveDownload(ctx.client, 'GET', `${filesBase(backup, diskId)}/content?path=${encodeURIComponent(e.path)}`, undefined, e.name);
      ctx.toast('success', t('toast.fileDownloaded', { name: e.name }));
    } catch (err) { ctx.toast('danger', t('toast.fileDownloadFailed', { name: e.name, error: errorText(err) })); } finally { btn.disabled = false; }
  }

  async function archive(paths) {
    const last = paths.length === 1 ? (paths[0].split('/').filter(Boolean).pop() || 'disk') : 'files';
    const name = `${backup.vm_name || 'vm'}-${last}.tar.gz`;
    archiveFolder.disabled = true; archiveSel.disabled = true;
    try {
      await saveDownload(ctx.client, 'POST', `${filesBase(backup, diskId)}/archive`, { paths }, name);
      ctx.toast('success', t('toast.fileDownloaded', { name }));
    } catch (err) { ctx.toast('danger', t('toast.fileDownloadFailed', { name, error: errorText(err) })); } finally { archiveFolder.disabled = path === '/'; syncSelection(); }
  }

  go('/');
  return m;
}
