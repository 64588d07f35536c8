// The restore wizard as the portal dialog opened by the "Restore" button on the VMs grid.

import { openWizard } from './wizard.js';

export async function render(ctx) {
  document.body.classList.add('ov-dialog');
  ctx._wantsLive = true;
  const vm = ctx.params.get('vm') ? { id: ctx.params.get('vm'), name: ctx.params.get('name') || '' } : null;
  const token = ctx.params.get('dialog');
  const close = () => {
    try { if (ctx.api && token) { ctx.api.closeDialog(token); return; } } catch (e) { /* */ }
    try { window.top.postMessage({ ovault: 'close-dialog' }, window.location.origin); } catch (e) { /* */ }
  };
  await openWizard(ctx, { vm, container: ctx.root, onClose: close });
}
