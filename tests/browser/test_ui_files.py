"""The file browser of the UI plugin (Files in a VM's Backups tab) in Chromium:
a sandbox VM with a real ext4 guest gets a file through the sandbox admin API,
is backed up, and the file is found by browsing and downloaded — alone and
with its folder as a tar.gz — with the content checked.

This module runs its own sandbox (`--guests ext4`; the session sandbox has no
guests), so `sandbox` is overridden here and the browser fixtures follow it."""
from __future__ import annotations

import base64
import io
import tarfile
import uuid

import pytest

from tests.browser.test_ui_plugin import detail_frame, harness, open_portal, select, shot
from tests.browser.conftest import run_orchestrator
from tests.helpers import CACHE_DIR, running_sandbox

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with running_sandbox(tmp_path_factory.mktemp("files-ui-sandbox"), "--hosts", "1", "--vms", "1",
                         "--guests", "ext4", "--no-nfs", start_timeout=1200) as sb:
        yield sb


@pytest.fixture(scope="module")
def orchestrator(sandbox):
    # libguestfs' appliance is built once per cache folder: share the tests' one
    with run_orchestrator(sandbox, env={"OVAULT_FILES_CACHE_DIR": str(CACHE_DIR / "files")}) as o:
        yield o


@pytest.fixture(scope="module")
def backed_up_guest(sandbox, orchestrator):
    vm = sandbox.vm("linux-ext4")
    data = (f"browser {uuid.uuid4().hex}\n" * 300).encode()
    sandbox.admin("POST", f"/vms/{vm['id']}/files", {"path": "/srv/ui/notes.txt",
                                                      "content_b64": base64.b64encode(data).decode()})
    job = orchestrator.api("POST", "/api/v1/backups", {"vm_ids": [vm["id"]], "mode": "full"})["job"]
    job = orchestrator.wait_job(job["id"], timeout=600)
    assert job["state"] == "succeeded", job
    return vm, job["machines"][0]["backup_id"], data


def test_browse_and_download_a_file_and_a_folder(page, portal, orchestrator, backed_up_guest, tmp_path):
    vm, backup_id, data = backed_up_guest
    open_portal(page, portal, orchestrator.admin_token)
    select(page, vm["name"])
    page.wait_for_function("window.__harness.plugins.ovault.iframe.contentWindow.ovault.state.role !== null")
    harness(page, "H.renderButtons()")
    tab = detail_frame(page)
    tab.locator(f"[data-backup='{backup_id}'] [data-action='files']").click()
    dialog = tab.locator("[data-dialog='files']")
    # the root lists the disk's file system (the first listing starts libguestfs: up to minutes under TCG)
    dialog.locator("[data-entry='/sda1'][data-type='filesystem']").wait_for(timeout=300_000)
    dialog.locator("[data-open='/sda1']").click()
    dialog.locator("[data-open='/sda1/srv']").click()
    dialog.locator("[data-open='/sda1/srv/ui']").click()
    row = dialog.locator("[data-entry='/sda1/srv/ui/notes.txt']")
    row.wait_for(timeout=120_000)
    assert row.get_attribute("data-type") == "file"
    assert dialog.locator("[aria-current='location']").inner_text() == "ui"
    shot(page, "vm-files")
    with page.expect_download(timeout=120_000) as dl:
        row.locator("[data-action='download']").click()
    got = tmp_path / "notes.txt"
    dl.value.save_as(got)
    assert dl.value.suggested_filename == "notes.txt"
    assert got.read_bytes() == data
    # the folder as a tar.gz
    with page.expect_download(timeout=180_000) as dl:
        dialog.locator("[data-action='archive-folder']").click()
    archive = tmp_path / "ui.tar.gz"
    dl.value.save_as(archive)
    assert dl.value.suggested_filename.endswith("-ui.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes()), mode="r:gz") as tar:
        assert tar.extractfile("sda1/srv/ui/notes.txt").read() == data
