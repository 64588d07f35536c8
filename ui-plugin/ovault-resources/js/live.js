// Live job updates: the orchestrator's websocket when it has one, polling
// otherwise, switching back and forth by itself.
//
//   websocket  GET /api/v1/ws; send {"type":"auth","token"} then
//              {"type":"subscribe","jobs":"*"}; receive {"type":"job.updated",
//              "job":{…}} (any message with a `job` object is taken).
//   polling    GET /api/v1/jobs/{id} every pollIntervalMs for each job being
//              watched, and GET /api/v1/jobs?limit=… for pages showing all jobs.
//
// Rate and ETA (`rate_bps`, `eta_seconds` per machine and disk) come from the
// server, in progress messages and in the jobs read back; nothing here measures them.
//
// A closed or refused websocket falls back to polling at once and is retried
// with exponential backoff (1 s … wsReconnectMaxMs). While the websocket is up
// a slow safety poll still runs for watched unfinished jobs, so a message
// format mismatch can delay updates but never freeze them.

export const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);

export class Live {
  constructor(client, { pollMs = 1000, reconnectMaxMs = 30000, listLimit = 25 } = {}) {
    this.client = client;
    this.pollMs = pollMs;
    this.reconnectMaxMs = reconnectMaxMs;
    this.listLimit = listLimit;
    this.jobs = new Map();        // id -> last job seen
    this.watched = new Set();     // ids followed until they end
    this.all = false;             // follow the job list too
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.mode = 'connecting';
    this.ws = null;
    this.backoff = 1000;
    this.stopped = true;
    this._timers = new Set();
  }

  onJob(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }
  onStatus(fn) { this.statusListeners.add(fn); fn(this.mode); return () => this.statusListeners.delete(fn); }

  watch(id) {
    if (!id) return;
    this.watched.add(id);
    if (!this.stopped) this._pollJob(id);
  }

  watchAll(on = true) { this.all = on; if (on && !this.stopped) this._pollList(); }

  start() {
    if (!this.stopped) return this;
    this.stopped = false;
    this._connect();
    this._loop();
    return this;
  }

  stop() {
    this.stopped = true;
    for (const t of this._timers) clearTimeout(t);
    this._timers.clear();
    if (this.ws) { try { this.ws.close(); } catch (e) { /* closed */ } this.ws = null; }
  }

  _later(fn, ms) {
    const t = setTimeout(() => { this._timers.delete(t); if (!this.stopped) fn(); }, ms);
    this._timers.add(t);
  }

  _setMode(m) {
    if (m === this.mode) return;
    this.mode = m;
    for (const fn of this.statusListeners) { try { fn(m); } catch (e) { console.error(e); } }
  }

  _emit(job) {
    if (!job || !job.id) return;
    job = this._monotonic(job);
    this.jobs.set(job.id, job);
    if (TERMINAL.has(job.state)) this.watched.delete(job.id);
    for (const fn of this.listeners) { try { fn(job); } catch (e) { console.error('ovault live listener', e); } }
  }

  // Progress comes from two sources: live websocket samples and full jobs read
  // back (snapshots, polls), whose counters the server stores at most twice a
  // second. A full job may therefore lag behind the last live sample: while a
  // machine stays in the same state its bar never moves backwards.
  _monotonic(job) {
    const prev = this.jobs.get(job.id);
    if (!prev || !Array.isArray(job.machines)) return job;
    const before = new Map((prev.machines || []).map((m) => [m.id, m]));
    job = { ...job, machines: job.machines.map((m) => {
      const p = before.get(m.id);
      if (!p || p.state !== m.state || TERMINAL.has(m.state) || !((p.bytes_done || 0) > (m.bytes_done || 0))) return m;
      return { ...m, bytes_done: p.bytes_done, bytes_total: p.bytes_total || m.bytes_total, progress: p.progress,
               disks: { ...(m.disks || {}), ...(p.disks || {}) }, rate_bps: p.rate_bps, eta_seconds: p.eta_seconds };
    }) };
    return job;
  }

  // --- websocket -------------------------------------------------------------
  _connect() {
    if (this.stopped || typeof WebSocket === 'undefined') return;
    let ws;
    try { ws = new WebSocket(this.client.wsUrl('api/v1/ws')); } catch (e) { this._wsDown(); return; }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token: this.client.getToken() }));
      ws.send(JSON.stringify({ type: 'subscribe', jobs: '*' }));
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      if (msg && typeof msg === 'object') this._message(msg);
    };
    ws.onclose = () => { if (this.ws === ws) { this.ws = null; this._wsDown(); } };
    ws.onerror = () => { /* onclose follows */ };
  }

  // Full jobs come in `job.snapshot` (on subscribe); afterwards the server sends
  // deltas (`job.updated`, `machine.updated`, `progress`) merged here into the
  // last full view. Anything about a job not seen yet, and every job end, is
  // completed with one GET so the final numbers are exact.
  _message(msg) {
    const t = msg.type;
    if (t === 'ready') { this.backoff = 1000; this._setMode('websocket'); return; }
    if (t === 'subscribed' || t === 'pong') return;
    if (t === 'error') { console.warn('ovault websocket:', msg.detail); return; }
    if (msg.job && msg.job.id) { this._emit(msg.job); return; }
    const id = msg.job_id;
    if (!id) return;
    const cur = this.jobs.get(id);
    if (!cur) { this._pollJob(id); return; }
    const job = { ...cur, machines: (cur.machines || []).map((m) => ({ ...m })) };
    const machine = job.machines.find((m) => m.id === msg.machine_id);
    if (t === 'job.updated') {
      if (msg.state) job.state = msg.state;
      if (msg.error !== undefined && msg.error !== null) job.error = msg.error;
      if (msg.cancel_requested) job.cancel_requested = true;
      if (TERMINAL.has(job.state)) { this._pollJob(id); return; }
    } else if (t === 'machine.updated') {
      if (!machine) { this._pollJob(id); return; }
      if (msg.state) machine.state = msg.state;
      if (msg.error) machine.error = msg.error;
      if (job.state === 'queued') job.state = 'running';
    } else if (t === 'progress') {
      if (!machine) { this._pollJob(id); return; }
      for (const k of ['bytes_done', 'bytes_total', 'progress', 'rate_bps', 'eta_seconds']) if (msg[k] !== undefined) machine[k] = msg[k];
      if (msg.disks) {
        machine.disks = { ...(machine.disks || {}) };
        for (const [d, p] of Object.entries(msg.disks)) {
          machine.disks[d] = { ...(machine.disks[d] || {}), done: p.bytes_done ?? p.done, total: p.bytes_total ?? p.total,
            rate_bps: p.rate_bps, eta_seconds: p.eta_seconds, ...(p.alias ? { alias: p.alias } : {}) };
        }
      }
      if (job.state === 'queued') job.state = 'running';
    } else {
      return;
    }
    this._emit(job);
  }

  _wsDown() {
    if (this.stopped) return;
    this._setMode('polling');
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.reconnectMaxMs);
    this._later(() => this._connect(), wait);
  }

  // --- polling -----------------------------------------------------------------
  _loop() {
    const ws = this.mode === 'websocket';
    const busy = [...this.jobs.values()].some((j) => !TERMINAL.has(j.state));
    for (const id of this.watched) this._pollJob(id);
    if (this.all && (!ws || !this._lastList || Date.now() - this._lastList > 5000)) this._pollList();
    // With the websocket up, polling is only a slow safety net.
    const wait = ws ? 5000 : (busy || this.watched.size ? this.pollMs : Math.max(this.pollMs, 3000));
    this._later(() => this._loop(), wait);
  }

  async _pollJob(id) {
    if (this._inflight?.has(id)) return;
    (this._inflight ||= new Set()).add(id);
    try {
      const j = await this.client.get(`api/v1/jobs/${encodeURIComponent(id)}`);
      if (this.mode === 'offline') this._setMode(this.ws ? 'websocket' : 'polling');
      this._emit(j);
    } catch (e) {
      if (e.status === 404) this.watched.delete(id);
      else if (e.status === 0) this._setMode('offline');
    } finally {
      this._inflight.delete(id);
    }
  }

  async _pollList() {
    if (this._listing) return;
    this._listing = true;
    try {
      const r = await this.client.get(`api/v1/jobs?limit=${this.listLimit}`);
      this._lastList = Date.now();
      if (this.mode === 'offline' || this.mode === 'connecting') this._setMode(this.ws && this.ws.readyState === 1 ? 'websocket' : 'polling');
      for (const j of (r.items || []).slice().reverse()) {
        const prev = this.jobs.get(j.id);
        if (!prev || JSON.stringify(prev) !== JSON.stringify(j)) this._emit(j);
      }
    } catch (e) {
      if (e.status === 0) this._setMode('offline');
    } finally {
      this._listing = false;
    }
  }
}
