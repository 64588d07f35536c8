// A stand-in for the oVirt Administration Portal's UI-plugin host, for tests.
//
// It follows webadmin's PluginManager (oVirt 4.4/4.5) where plugins can tell:
//  * plugin definitions come from `window.pluginDefinitions` (the engine writes
//    them into the host page from ui-plugins/*.json merged with
//    /etc/ovirt-engine/ui-plugins/<name>-config.json);
//  * each plugin gets a hidden 0×0 iframe on its host page URL (relative URLs
//    resolve against /ovirt-engine/webadmin/);
//  * states DEFINED → LOADING → READY → INITIALIZING → IN_USE, or FAILED;
//    register() once; ready() only while LOADING and after register();
//    UiInit once, when ready and the portal allows invocation (after login);
//  * UI functions act only while INITIALIZING or IN_USE (otherwise ignored),
//    accessors (ssoToken, loginUserName, …) also while LOADING;
//  * UserLogin is "now or later": queued until the plugin is IN_USE;
//    selection events go only to plugins IN_USE;
//  * an exception escaping any handler removes the plugin's iframe and marks
//    it FAILED;
//  * MessageReceived only for origins in options().allowedMessageOrigins.
// Every API call is recorded in window.__harness.calls for the tests.

const qs = new URLSearchParams(location.search);
const H = window.__harness = {
  calls: [], failures: [], toasts: [], alerts: [], plugins: {}, places: {}, containers: {}, detailPlaces: {},
  buttons: [], dialogs: {}, selection: [], selectionForm: qs.get('selection') === 'spread' ? 'spread' : 'array',
  user: { name: qs.get('user') || 'admin@internal-authz', id: qs.get('user_id') || 'fdfc627c-d875-11e0-90f0-83df133b58cc', token: qs.get('token') || '' },
  vms: [], current: null, log: [],
};
let canInvokePlugins = false;
const scheduled = {};  // plugin name -> [fn]

function record(fn, args, extra = {}) {
  const clean = Array.from(args || [], (a) => (typeof a === 'function' ? '[function]' : a && typeof a === 'object' ? JSON.parse(JSON.stringify(a, (k, v) => (typeof v === 'function' ? '[function]' : v))) : a));
  H.calls.push({ fn, args: clean, t: Date.now(), ...extra });
}

// --- plugin lifecycle ---------------------------------------------------------------
function definePlugins() {
  for (const md of window.pluginDefinitions || []) {
    if (!md.name || !md.url || H.plugins[md.name]) continue;
    const iframe = document.createElement('iframe');
    iframe.src = md.url;
    Object.assign(iframe.style, { position: 'absolute', width: '0pt', height: '0pt', border: 'none' });
    iframe.setAttribute('frameborder', '0');
    iframe.dataset.plugin = md.name;
    const p = H.plugins[md.name] = { name: md.name, meta: md, iframe, state: 'DEFINED', handlers: null, options: {} };
    if (md.enabled !== false) { document.body.appendChild(iframe); p.state = 'LOADING'; }
  }
}

function invoke(p, fn, args) {
  const f = p.handlers && p.handlers[fn];
  if (typeof f !== 'function') return true;
  H.log.push(`invoke ${fn} on ${p.name}`);
  try {
    f.apply(p.handlers, args || []);
    return true;
  } catch (e) {
    H.failures.push({ plugin: p.name, fn, error: String(e && e.stack || e) });
    if (p.iframe.parentNode) p.iframe.parentNode.removeChild(p.iframe);
    p.state = 'FAILED';
    return false;
  }
}

function initPlugin(p) {
  if (!canInvokePlugins) return;
  if (p.state === 'READY') {
    p.state = 'INITIALIZING';
    if (invoke(p, 'UiInit', [])) p.state = 'IN_USE';
  }
  if (p.state === 'IN_USE') {
    const cmds = scheduled[p.name] || [];
    delete scheduled[p.name];
    cmds.forEach((c) => c());
  }
}

function invokeNow(fn, args) {
  if (!canInvokePlugins) return;
  for (const p of Object.values(H.plugins)) if (p.state === 'IN_USE') invoke(p, fn, args);
}

function invokeNowOrLater(fn, args) {
  invokeNow(fn, args);
  for (const p of Object.values(H.plugins)) {
    if (!canInvokePlugins || p.state !== 'IN_USE') {
      (scheduled[p.name] ||= []).push(() => { if (canInvokePlugins && p.state === 'IN_USE') invoke(p, fn, args); });
    }
  }
}

function allowed(name, whileLoading) {
  const p = H.plugins[name];
  if (!p) return false;
  return p.state === 'INITIALIZING' || p.state === 'IN_USE' || (whileLoading && p.state === 'LOADING');
}

// --- the API object ------------------------------------------------------------------
function ui(name, fn, impl) {
  return function (...args) {
    const ok = allowed(this.pluginName, false);
    record(fn, args, { plugin: this.pluginName, rejected: !ok });
    if (ok) return impl.apply(this, args);
    return undefined;
  };
}
function accessor(fn, impl) {
  return function (...args) {
    const ok = allowed(this.pluginName, true);
    record(fn, [], { plugin: this.pluginName, rejected: !ok });
    return ok ? impl.apply(this, args) : undefined;
  };
}

function pluginApi(pluginName) { return new pluginApi.fn.init(pluginName); }
pluginApi.fn = pluginApi.prototype = {
  pluginName: null,
  init: function init(pluginName) { this.pluginName = pluginName; return this; },
  register(handlers) {
    record('register', [handlers], { plugin: this.pluginName });
    const p = H.plugins[this.pluginName];
    if (p && handlers && !p.handlers) p.handlers = handlers;
  },
  options(o) {
    record('options', [o], { plugin: this.pluginName });
    const p = H.plugins[this.pluginName];
    if (p && o) p.options = o;
  },
  ready() {
    record('ready', [], { plugin: this.pluginName });
    const p = H.plugins[this.pluginName];
    if (p && p.state === 'LOADING' && p.handlers) { p.state = 'READY'; initPlugin(p); }
  },
  configObject() { record('configObject', [], { plugin: this.pluginName }); const p = H.plugins[this.pluginName]; return p ? (p.meta.config || {}) : null; },
  loginUserName: accessor('loginUserName', () => H.user.name),
  loginUserId: accessor('loginUserId', () => H.user.id),
  ssoToken: accessor('ssoToken', () => H.user.token),
  engineBaseUrl: accessor('engineBaseUrl', () => `${location.origin}/ovirt-engine/`),
  currentLocale: accessor('currentLocale', () => 'en_US'),
  currentPlace: accessor('currentPlace', () => H.current),
  addPrimaryMenuPlace: ui('', 'addPrimaryMenuPlace', function (label, token, url, opts) { addPlace(this.pluginName, null, label, token, url, opts); }),
  addPrimaryMenuContainer: ui('', 'addPrimaryMenuContainer', function (label, id, opts) { H.containers[id] = { label, id, opts: opts || {}, plugin: this.pluginName }; renderNav(); }),
  addSecondaryMenuPlace: ui('', 'addSecondaryMenuPlace', function (cid, label, token, url, opts) { addPlace(this.pluginName, cid, label, token, url, opts); }),
  addDetailPlace: ui('', 'addDetailPlace', function (entity, label, token, url, opts) { H.detailPlaces[token] = { entity, label, token, url, opts: opts || {}, accessible: true }; renderDetail(); }),
  setPlaceContentUrl: ui('', 'setPlaceContentUrl', (token, url) => {
    const pl = H.places[token] || H.detailPlaces[token];
    if (!pl) return;
    pl.url = url;
    if (H.current === token) showPlace(token);
    if (H.detailPlaces[token]) renderDetail(true);
  }),
  setPlaceAccessible: ui('', 'setPlaceAccessible', (token, acc) => { const pl = H.places[token] || H.detailPlaces[token]; if (pl) { pl.accessible = !!acc; renderNav(); renderDetail(); } }),
  addMenuPlaceActionButton: ui('', 'addMenuPlaceActionButton', function (entity, label, iface) { H.buttons.push({ entity, label, iface: iface || {}, plugin: this.pluginName }); renderButtons(); }),
  showDialog: ui('', 'showDialog', (title, token, url, w, hgt, opts) => showDialog(title, token, url, w, hgt, opts || {})),
  setDialogContentUrl: ui('', 'setDialogContentUrl', (token, url) => { const d = H.dialogs[token]; if (d) d.iframe.src = url; }),
  closeDialog: ui('', 'closeDialog', (token) => closeDialog(token)),
  showAlert: ui('', 'showAlert', (type, msg) => { H.alerts.push({ type, msg }); toastEl(type, msg, true); }),
  showToast: ui('', 'showToast', (type, msg) => { H.toasts.push({ type, msg }); toastEl(type, msg); }),
  revealPlace: ui('', 'revealPlace', (token) => { location.hash = token; }),
  setSearchString: ui('', 'setSearchString', () => {}),
  // Pre-4.3 names, still accepted by 4.4/4.5 with a deprecation warning.
  addMainTab: ui('', 'addMainTab', function (label, token, url, opts) { addPlace(this.pluginName, null, label, token, url, opts); }),
  addSubTab: ui('', 'addSubTab', function (entity, label, token, url, opts) { H.detailPlaces[token] = { entity, label, token, url, opts: opts || {}, accessible: true }; renderDetail(); }),
};
pluginApi.fn.init.prototype = pluginApi.fn;
window.pluginApi = pluginApi;

// --- portal UI -----------------------------------------------------------------------
const $ = (sel) => document.querySelector(sel);
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : document.createTextNode(k));
  return e;
}

function addPlace(plugin, container, label, token, url, opts) {
  H.places[token] = { plugin, container, label, token, url, opts: opts || {}, accessible: true };
  renderNav();
  if (location.hash.slice(1) === token) route();
}

function renderNav() {
  const nav = $('#nav');
  const items = [
    { label: 'Dashboard', token: 'dashboard-main', builtin: true, priority: -3 },
    { label: 'Compute', id: 'compute', builtin: true, priority: -2, children: [{ label: 'Virtual Machines', token: 'vms', builtin: true }] },
    { label: 'Storage', token: 'storage', builtin: true, priority: -1, disabled: true },
  ];
  for (const c of Object.values(H.containers)) {
    items.push({ label: c.label, id: c.id, priority: c.opts.priority ?? 99, icon: c.opts.icon,
      children: Object.values(H.places).filter((p) => p.container === c.id && p.accessible).sort((a, b) => (a.opts.priority ?? 99) - (b.opts.priority ?? 99)) });
  }
  for (const p of Object.values(H.places)) if (!p.container && p.accessible) items.push({ label: p.label, token: p.token, priority: p.opts.priority ?? 99 });
  items.sort((a, b) => a.priority - b.priority);
  nav.replaceChildren(...items.map((it) => {
    if (!it.children) {
      return el('li', {}, el('a', { href: it.disabled ? undefined : `#${it.token}`, class: H.current === it.token ? 'active' : '', 'data-token': it.token, 'aria-disabled': it.disabled ? 'true' : undefined }, it.label));
    }
    const open = it.children.some((c) => c.token === H.current);
    return el('li', { class: `container${open ? ' open' : ''}`, 'data-container': it.id },
      el('span', { class: 'container-label' }, it.label),
      el('ul', {}, it.children.map((c) => el('li', {}, el('a', { href: `#${c.token}`, class: H.current === c.token ? 'active' : '', 'data-token': c.token }, c.label)))));
  }));
}

function route() {
  const token = location.hash.slice(1) || 'vms';
  H.current = token;
  renderNav();
  if (token === 'vms') { showVms(); return; }
  if (H.places[token]) { showPlace(token); return; }
  $('#content').replaceChildren(el('div', { class: 'placeholder' }, 'This part of the portal is not emulated.'));
}
window.addEventListener('hashchange', route);

function showPlace(token) {
  const pl = H.places[token];
  const frame = el('iframe', { src: pl.url, class: 'place-frame', title: pl.label, 'data-place': token });
  $('#content').replaceChildren(frame);
}

function showVms() {
  const table = el('table', { class: 'grid', 'data-grid': 'vms' },
    el('thead', {}, el('tr', {}, el('th', {}, ''), el('th', {}, 'Name'), el('th', {}, 'Host'), el('th', {}, 'Cluster'), el('th', {}, 'Memory'), el('th', {}, 'Status'))),
    el('tbody', {}, H.vms.map((v) => el('tr', { 'data-vm': v.id, class: H.selection.some((s) => s.id === v.id) ? 'selected' : '', onclick: (e) => clickRow(v, e) },
      el('td', {}, el('input', { type: 'checkbox', 'aria-label': `Select ${v.name}`, checked: H.selection.some((s) => s.id === v.id) || undefined, onclick: (e) => { e.stopPropagation(); clickRow(v, { ctrlKey: true }); } })),
      el('td', {}, el('strong', {}, v.name)), el('td', {}, v.host || 'host1'), el('td', {}, v.cluster || 'Default'),
      el('td', {}, v.memory ? `${Math.round(v.memory / 1048576)} MB` : ''), el('td', {}, el('span', { class: `status ${v.status || 'up'}` }, v.status || 'up'))))));
  $('#content').replaceChildren(
    el('div', { class: 'page-head' }, el('div', { class: 'crumbs' }, 'Compute  ›  Virtual Machines'), el('h1', {}, 'Virtual Machines')),
    el('div', { class: 'toolbar' }, el('input', { class: 'search', value: 'Vms:', 'aria-label': 'Search' }),
      el('span', { class: 'spacer' }),
      ['New', 'Edit', 'Remove', 'Run', 'Shutdown'].map((l) => el('button', { class: 'btn builtin', disabled: true }, l)),
      el('span', { id: 'plugin-buttons' })),
    table,
    el('div', { id: 'detail' }));
  renderButtons();
  renderDetail();
}

function clickRow(vm, e) {
  let sel = H.selection.slice();
  if (e.ctrlKey || e.metaKey) sel = sel.some((s) => s.id === vm.id) ? sel.filter((s) => s.id !== vm.id) : sel.concat([vm]);
  else sel = [vm];
  select(sel);
}

// Selection → VirtualMachineSelectionChange (4.4+: one array; up to 4.3: spread).
function entityArgs(items) {
  const ents = items.map((v) => ({ ...v }));
  return H.selectionForm === 'spread' ? ents : [ents];
}
function select(items) {
  H.selection = items;
  invokeNow('VirtualMachineSelectionChange', entityArgs(items));
  if (H.current === 'vms') showVms();
}
H.select = (ids) => select(H.vms.filter((v) => ids.includes(v.id) || ids.includes(v.name)));

function callButton(b, fn, items) {
  const f = b.iface[fn];
  if (typeof f !== 'function') return fn === 'onClick' ? undefined : true;
  try { return f.apply(b.iface, entityArgs(items)); } catch (e) {
    H.failures.push({ plugin: b.plugin, fn: `button ${b.label} ${fn}`, error: String(e && e.stack || e) });
    return false;
  }
}
function renderButtons() {
  const box = $('#plugin-buttons');
  if (!box) return;
  box.replaceChildren(...H.buttons.filter((b) => b.entity === 'VirtualMachine' && callButton(b, 'isAccessible', H.selection) !== false)
    .map((b) => el('button', { class: 'btn', 'data-button': b.label, disabled: callButton(b, 'isEnabled', H.selection) === false || undefined,
      onclick: () => { record('button.click', [b.label]); callButton(b, 'onClick', H.selection); } }, b.label)));
}
H.renderButtons = renderButtons;

let detailTab = 'general';
function renderDetail(reload) {
  const box = $('#detail');
  if (!box) return;
  if (H.selection.length !== 1) { box.replaceChildren(); return; }
  const vm = H.selection[0];
  const tabs = [{ token: 'general', label: 'General' }].concat(Object.values(H.detailPlaces).filter((d) => d.entity === 'VirtualMachine' && d.accessible)
    .sort((a, b) => (a.opts.priority ?? 99) - (b.opts.priority ?? 99)));
  if (!tabs.some((t) => t.token === detailTab)) detailTab = 'general';
  const cur = H.detailPlaces[detailTab];
  const existing = box.querySelector('iframe.detail-frame');
  if (existing && cur && !reload && existing.dataset.src === cur.url) return;
  box.replaceChildren(
    el('ul', { class: 'tabs', role: 'tablist' }, tabs.map((t) => el('li', {}, el('button', { role: 'tab', 'aria-selected': String(t.token === detailTab), 'data-tab': t.token,
      onclick: () => { detailTab = t.token; renderDetail(true); } }, t.label)))),
    cur ? el('iframe', { class: 'detail-frame', src: cur.url, 'data-src': cur.url, 'data-place': cur.token, title: cur.label })
      : el('dl', { class: 'general' }, el('dt', {}, 'Name'), el('dd', {}, vm.name), el('dt', {}, 'ID'), el('dd', {}, vm.id), el('dt', {}, 'Status'), el('dd', {}, vm.status || 'up')));
}

function showDialog(title, token, url, w, hgt, opts) {
  closeDialog(token);
  const iframe = el('iframe', { src: url, class: 'dialog-frame', title, 'data-dialog': token, style: `width:${w};height:${hgt}` });
  const onKey = (e) => { if (e.key === 'Escape' && opts.closeOnEscKey !== false) closeDialog(token); };
  const box = el('div', { class: 'dialog-backdrop', 'data-dialog-box': token },
    el('div', { class: 'dialog', role: 'dialog', 'aria-label': title },
      el('div', { class: 'dialog-head' }, el('h2', {}, title), opts.closeIconVisible !== false ? el('button', { class: 'dialog-close', 'aria-label': 'Close', onclick: () => closeDialog(token) }, '×') : null),
      iframe,
      (opts.buttons || []).length ? el('div', { class: 'dialog-foot' }, opts.buttons.map((b) => el('button', { class: 'btn', onclick: () => b.onClick && b.onClick() }, b.label))) : null));
  document.addEventListener('keydown', onKey);
  H.dialogs[token] = { box, iframe, onKey };
  document.body.append(box);
}
function closeDialog(token) {
  const d = H.dialogs[token];
  if (!d) return;
  d.box.remove(); document.removeEventListener('keydown', d.onKey); delete H.dialogs[token];
}

function toastEl(type, msg, isAlert) {
  const t = el('div', { class: `toast ${type}`, role: 'status', 'data-toast-type': type }, el('strong', {}, { success: '✓', danger: '!', warning: '!', info: 'i' }[type] || 'i'), ' ', msg);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), isAlert ? 15000 : 9000);
}

// postMessage from plugin frames → MessageReceived, origin-checked.
window.addEventListener('message', (e) => {
  for (const p of Object.values(H.plugins)) {
    if (p.state !== 'IN_USE') continue;
    const o = p.options.allowedMessageOrigins;
    const list = Array.isArray(o) ? o : (o ? [o] : []);
    if (list.includes('*') || list.includes(e.origin)) invoke(p, 'MessageReceived', [e.data, e.source]);
    else H.log.push(`message from ${e.origin} rejected for ${p.name}`);
  }
});

// --- start: define and load plugins, then "log in" -----------------------------------
async function start() {
  try { H.vms = await (await fetch('__vms.json', { cache: 'no-store' })).json(); } catch (e) { H.vms = []; }
  $('#user').textContent = H.user.name;
  definePlugins();
  // Login: the portal enables plugin invocation (deferred) and fires UserLogin now-or-later.
  invokeNowOrLater('UserLogin', [H.user.name, H.user.id]);
  setTimeout(() => {
    canInvokePlugins = true;
    for (const p of Object.values(H.plugins)) initPlugin(p);
  }, 0);
  route();
}
H.logout = () => { invokeNow('UserLogout', []); canInvokePlugins = false; for (const k of Object.keys(scheduled)) delete scheduled[k]; };
start();
