// The host page's session: the API client, the caller's role, and the jobs it
// follows to toast their end. Started at UiInit/UserLogin, stopped at UserLogout.

import { config, apiBaseUrl, liveOptions } from './config.js';
import { token } from './portal.js';
import { Client, can } from './api.js';
import { Live, TERMINAL } from './live.js';
import { t } from './messages.js';

export class Session {
  constructor(api) {
    this.api = api;
    this.selection = [];
    this.role = null;
    this.client = null;
    this.live = null;
    this.followed = new Map();
    this.generation = 0;
  }

  start(guard) {
    this.stop();
    if (!token(this.api)) return;        // not logged in yet: UserLogin will start it
    const cfg = config(this.api);
    const generation = ++this.generation;
    this.client = new Client(apiBaseUrl(cfg), () => token(this.api));
    this.live = new Live(this.client, liveOptions(cfg));
    this.live.onJob(guard('job update', (job) => this.onJobUpdate(job)));
    this.live.start();
    this.client.role().then((role) => { if (generation === this.generation) this.role = role; }, () => {});
  }

  stop() {
    if (this.live) this.live.stop();
    this.live = null; this.client = null; this.role = null;
    this.followed.clear();
  }

  get canOperate() { return can.operate(this.role); }

  toast(type, msg) { try { this.api.showToast(type, msg); } catch (e) { /* ignore */ } }

  follow(jobId, label) {
    if (!this.live || !jobId) return;
    this.followed.set(jobId, label || this.followed.get(jobId) || '');
    this.live.watch(jobId);
  }

  onJobUpdate(job) {
    if (!this.followed.has(job.id) || !TERMINAL.has(job.state)) return;
    const label = this.followed.get(job.id) || t('job.generic', { kind: job.kind });
    this.followed.delete(job.id);
    const names = (job.machines || []).map((m) => m.vm_name).filter(Boolean).join(', ');
    const what = t(job.kind === 'restore' ? 'toast.restoreOf' : 'toast.backupOf', { names: names || label });
    if (job.state === 'succeeded') this.toast('success', t('toast.jobSucceeded', { what }));
    else if (job.state === 'canceled') this.toast('warning', t('toast.jobCanceled', { what }));
    else {
      const err = job.error || (job.machines || []).map((m) => m.error).filter(Boolean)[0] || '';
      this.toast('danger', err ? t('toast.jobFailedWith', { what, error: err }) : t('toast.jobFailed', { what }));
    }
  }
}
