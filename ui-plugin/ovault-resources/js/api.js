// The orchestrator's REST API (/api/v1) as seen from the browser.
//
// Every call carries `Authorization: Bearer <token>`; the token is read at each
// call because the portal renews the SSO token. Errors arrive as
// application/problem+json and become ApiError with the problem's fields.

import { t } from './messages.js';

export class ApiError extends Error {
  constructor(status, problem, url) {
    const p = problem || {};
    super(p.detail || p.title || `HTTP ${status}`);
    this.status = status;
    this.type = p.type || '';
    this.title = p.title || '';
    this.detail = p.detail || '';
    this.url = url;
  }
  get missing() { return this.status === 404 || this.status === 405 || this.status === 501; }
}

export class Client {
  constructor(baseUrl, getToken) {
    this.base = baseUrl;            // absolute, ends with '/'
    this.getToken = getToken;
    this._role = null;
  }

  url(path) { return new URL(path.replace(/^\//, ''), this.base).href; }

  wsUrl(path) {
    const u = new URL(this.url(path));
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.href;
  }

  async request(method, path, body, { timeoutMs = 30000 } = {}) {
    const headers = { Accept: 'application/json' };
    const tok = this.getToken();
    if (tok) headers.Authorization = `Bearer ${tok}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    let r;
    const url = this.url(path);
    try {
      r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit', cache: 'no-store', signal: ctl.signal });
    } catch (e) {
      throw new ApiError(0, { title: t('error.network'),
        detail: t('error.unreachable', { reason: e.name === 'AbortError' ? t('error.timeout') : e.message }) }, url);
    } finally {
      clearTimeout(timer);
    }
    const text = await r.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = { detail: text.slice(0, 200) }; }
    }
    if (!r.ok) throw new ApiError(r.status, data, url);
    return data;
  }

  get(path) { return this.request('GET', path); }
  post(path, body = {}) { return this.request('POST', path, body); }
  patch(path, body = {}) { return this.request('PATCH', path, body); }
  del(path) { return this.request('DELETE', path); }

  // GET that answers `fallback` when the orchestrator does not have the endpoint
  // (yet): the plugin degrades instead of failing.
  async optional(path, fallback = null) {
    try { return await this.get(path); } catch (e) {
      if (e instanceof ApiError && e.missing) return fallback;
      throw e;
    }
  }

  // The caller's role: viewer < operator < admin. `GET /api/v1/me` when the
  // orchestrator has it; otherwise ask side-effect-free questions: a backup
  // request with an empty VM list is refused with 403 before validation for a
  // viewer and with 400 (invalid body) for anyone allowed to back up.
  async role() {
    if (this._role) return this._role;
    this._role = this._detectRole().catch(() => 'viewer');
    return this._role;
  }

  async _detectRole() {
    try {
      const me = await this.get('api/v1/me');
      if (me && me.role) return me.role;
    } catch (e) {
      if (!(e instanceof ApiError && e.missing)) throw e;
    }
    let role = 'viewer';
    try { await this.post('api/v1/backups', { vm_ids: [] }); role = 'operator'; } catch (e) {
      if (e.status === 403 || e.status === 401 || e.status === 0) return 'viewer';
      role = 'operator';
    }
    try { await this.get('api/v1/webhooks'); return 'admin'; } catch (e) {
      if (e.status === 403) return role;
      // No admin endpoint to ask yet: operators can do all the plugin offers today.
      return role;
    }
  }
}

export const can = {
  operate: (role) => role === 'operator' || role === 'admin',
  admin: (role) => role === 'admin',
};
