"""The appliance image boots: built by deploy/appliance/build.sh (the `./dev appliance`
command, cached by its inputs), booted under qemu-system-x86_64 from a snapshot overlay
with user-mode networking, once without a seed, once with a NoCloud seed, and once with a
seed pointing at a sandbox on this machine, where a backup and a restore run inside it.

KVM is used when it works: when /dev/kvm exists but a guest kernel makes no progress
under it in 40 s (some nested-virtualisation hosts), the boot is retried with TCG, and
later boots of the module go straight to TCG.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO / "build" / "ovault-appliance.qcow2"
QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture(scope="module")
def image() -> Path:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)")
    t0 = time.monotonic()
    if os.environ.get("OVAULT_TEST_APPLIANCE_PREBUILT") == "1" and IMAGE.exists():
        # Iterating on the seed or the test side: the image as last built, however stale.
        return IMAGE
    subprocess.run(["bash", str(REPO / "deploy/appliance/build.sh")], check=True, timeout=1500)
    print(f"appliance build (or cache hit): {time.monotonic() - t0:.0f}s, "
          f"{IMAGE.stat().st_size / 2**20:.0f} MiB")
    # The OVA beside it carries the same disk (tests/integration/deploy checks its packing).
    import tarfile
    with tarfile.open(IMAGE.with_suffix(".ova")) as tar:
        names = tar.getnames()
        assert names[0] == "ovault-appliance.ovf" and names[-1] == "ovault-appliance.mf"
        assert tar.getmember("ovault-appliance-disk1.qcow2").size == IMAGE.stat().st_size
    return IMAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_KVM_WORKS: list[bool] = []   # the first boot's finding, for the module's later boots
MAC = "52:54:00:0a:11:01"


class Guest:
    """One qemu boot of the image; the image itself is never written (-snapshot, or
    a qcow2 overlay when the disk is to be larger than the image)."""

    def __init__(self, image: Path, tmp: Path, seed: Path | None = None,
                 disk_gib: int | None = None, guest_ip: str = ""):
        self.image, self.tmp, self.seed = image, tmp, seed
        self.console = tmp / "console.log"
        self.https, self.ssh = free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.accel = ""
        self.guest_ip = guest_ip
        self.disk = ["-snapshot", "-drive", f"file={image},if=virtio,format=qcow2"]
        if disk_gib:
            overlay = tmp / "overlay.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2",
                            str(overlay), f"{disk_gib}G"], check=True)
            self.disk = ["-drive", f"file={overlay},if=virtio,format=qcow2"]

    def _start(self, accel: str) -> None:
        self.console.unlink(missing_ok=True)
        cmd = [QEMU, "-machine", f"q35,accel={accel}", "-m", "1536", "-smp", "2", *self.disk,
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.https}-{self.guest_ip}:8443,"
                          f"hostfwd=tcp:127.0.0.1:{self.ssh}-{self.guest_ip}:22",
               "-device", f"virtio-net-pci,netdev=n0,mac={MAC}",
               "-serial", f"file:{self.console}", "-monitor", "none", "-display", "none"]
        if self.seed:
            cmd += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        self.accel = accel
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def boot(self) -> None:
        if os.access("/dev/kvm", os.R_OK | os.W_OK) and _KVM_WORKS != [False]:
            self._start("kvm")
            if self.wait_console("Linux version", 40, fail=False):
                _KVM_WORKS[:] = [True]
                return
            _KVM_WORKS[:] = [False]
            self.stop()
        self._start("tcg")
        assert self.wait_console("Linux version", 120), "no kernel output under TCG"

    def text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, needle: str, seconds: float, fail: bool = True) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            assert self.proc and self.proc.poll() is None, f"qemu exited:\n{self.text()[-3000:]}"
            time.sleep(1)
        if fail:
            raise AssertionError(f"{needle!r} not on the console in {seconds}s:\n{self.text()[-3000:]}")
        return False

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the appliance's own cert
        req = urllib.request.Request(f"https://127.0.0.1:{self.https}{path}")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_healthy(self) -> float:
        t0 = time.monotonic()
        limit = 240 if self.accel == "kvm" else 600
        while time.monotonic() - t0 < limit:
            assert self.proc and self.proc.poll() is None, f"qemu exited:\n{self.text()[-3000:]}"
            try:
                if self.get("/healthz")[0] == 200:
                    return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(2)
        raise AssertionError(f"/healthz not 200 in {limit}s ({self.accel}):\n{self.text()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_first_boot_without_seed(image, tmp_path):
    g = Guest(image, tmp_path)
    t0 = time.monotonic()
    try:
        g.boot()
        g.wait_healthy()
        up = time.monotonic() - t0
        g.wait_console("the first admin token is in /var/lib/ovault/admin.token", 120)
        out = g.text()
        assert "ovault-firstboot: no NoCloud seed found: default configuration" in out
        assert "engine https://engine.invalid/ovirt-engine/api, target /var/lib/ovault/target" in out
        assert "ovault-growroot: root fills its disk" in out
        # Everything but health needs a token.
        assert g.get("/api/v1/jobs")[0] == 401
        print(f"appliance boot to /healthz 200 ({g.accel}): {up:.0f}s")
    finally:
        g.stop()


def make_seed(tmp: Path, user_data: str, meta: str, network: str = "") -> Path:
    d = tmp / "seed"
    d.mkdir()
    (d / "user-data").write_text(user_data)
    (d / "meta-data").write_text(meta)
    files = [str(d / "user-data"), str(d / "meta-data")]
    if network:
        (d / "network-config").write_text(network)
        files.append(str(d / "network-config"))
    iso = tmp / "seed.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet",
                    "-rock", *files], check=True)
    return iso


def test_first_boot_with_nocloud_seed(image, tmp_path):
    if not shutil.which("genisoimage"):
        pytest.skip("genisoimage missing (scripts/setup.sh installs it)")
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.pem"),
                    "-subj", "/CN=seed test CA", "-days", "2"], check=True, capture_output=True)
    ca = (tmp_path / "ca.pem").read_text().strip()  # ovault loads it at start: a real certificate
    user_data = "#cloud-config\n" + json.dumps({   # JSON is YAML
        "hostname": "vault-from-seed",
        "ssh_authorized_keys": [key.with_suffix(".pub").read_text().strip()],
        "ovault": {
            "engine": {"url": "https://engine.example.test/ovirt-engine/api",
                       "username": "ovault@internal", "password": 'pa"ss\\word', "ca_pem": ca},
            "target": {"url": "/srv/ovault-target", "name": "local1"},
            "movers": {"token": "mover-secret", "hosts": {"0b9c": "https://10.0.2.2:54323"}},
        }}, indent=1)
    # A static address on user-mode networking's subnet, matched by MAC address.
    network = ("version: 2\nethernets:\n  lan:\n    match: {macaddress: '%s'}\n"
               "    addresses: [10.0.2.50/24]\n    gateway4: 10.0.2.2\n"
               "    nameservers: {addresses: [10.0.2.3]}\n" % MAC)
    seed = make_seed(tmp_path, user_data, "instance-id: iid-test-1\nlocal-hostname: ignored\n", network)
    # A disk larger than the image: the root grows to fill it at boot.
    g = Guest(image, tmp_path, seed, disk_gib=12, guest_ip="10.0.2.50")
    try:
        g.boot()
        g.wait_healthy()
        out = g.text()
        assert "ovault-firstboot: seed: /dev/vdb" in out
        assert "engine https://engine.example.test/ovirt-engine/api" in out
        assert "mover-secret" not in out and "pa\"ss" not in out  # no secrets on the console

        def ssh(command: str) -> str:
            r = subprocess.run(["ssh", "-i", str(key), "-p", str(g.ssh), "-o", "BatchMode=yes",
                                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                                "-o", "ConnectTimeout=10", "root@127.0.0.1", command],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            return r.stdout
        toml = ssh("cat /etc/ovault/ovault.toml")
        import tomllib
        cfg = tomllib.loads(toml)
        assert cfg["engine"] == {"url": "https://engine.example.test/ovirt-engine/api",
                                 "username": "ovault@internal", "password": 'pa"ss\\word',
                                 "ca_file": "/etc/ovault/engine-ca.pem"}
        assert cfg["target"] == {"url": "/srv/ovault-target", "name": "local1"}
        # A mounted-path target outside the state directory gets a ReadWritePaths drop-in.
        assert "ReadWritePaths=/srv/ovault-target" in ssh("systemctl cat ovault")
        assert ssh("stat -c %U /srv/ovault-target").strip() == "ovault"
        assert cfg["movers"]["hosts"] == {"0b9c": "https://10.0.2.2:54323"}
        assert cfg["listen"] == {"host": "0.0.0.0", "port": 8443}
        assert ssh("cat /etc/ovault/engine-ca.pem").strip() == ca
        assert ssh("stat -c '%a %U:%G' /etc/ovault/ovault.toml").strip() == "640 root:ovault"
        assert ssh("hostname").strip() == "vault-from-seed"
        assert "inet 10.0.2.50/24" in ssh("ip -4 addr show")
        assert "default via 10.0.2.2" in ssh("ip -4 route show default")
        assert ssh("ls /etc/systemd/network").split() == ["10-seed-00-lan.network"]
        assert "network from the seed: 10-seed-00-lan.network" in out
        assert "ovault-growroot: root grew from" in out
        size = int(ssh("df -B1M --output=size / | tail -1").strip())
        assert size > 11 * 1024, f"root is {size} MiB on a 12 GiB disk"
        token = ssh("cat /var/lib/ovault/admin.token").strip()
        assert ssh("stat -c '%a' /var/lib/ovault/admin.token").strip() == "600"
        status, body = g.get("/api/v1/jobs", token)
        assert status == 200, body
        # (any other bearer is taken for an engine SSO token: this seed's engine does not exist)
        assert g.get("/api/v1/jobs")[0] == 401
    finally:
        g.stop()


# --- a backup and a restore run from inside the appliance -------------------------------
# The sandbox runs on this machine, its services on 127.0.0.1; the appliance reaches them
# through user-mode networking's gateway, 10.0.2.2. The lab names 10.0.2.2 in its server
# certificate and in the transfer URLs it hands out (`sandbox up --address 10.0.2.2`), so
# the appliance verifies TLS against the lab's CA exactly as against an engine's. The
# sandbox's movers see the NFS export as 127.0.0.1 and the appliance as 10.0.2.2, so the
# appliance copies itself (movers.enabled = false): imageio -> appliance -> NFS target.
SLIRP_HOST = "10.0.2.2"
BACKUP_STATES = ["snapshot", "metadata", "transfer", "finalize", "succeeded"]
RESTORE_STATES = ["prepare", "transfer", "finalize", "succeeded"]
NFS_LOCK = Path("/run/ovault-nfs.lock")


def _nfs_free() -> bool:
    import fcntl
    try:
        fd = os.open(NFS_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


@pytest.fixture
def nfs_lab(request):
    """A sandbox with the NFS target: the session's own when it runs one (only one NFS
    server runs per machine; the session's engine hands the appliance transfer URLs on
    10.0.2.2, the address the appliance reaches it at), else one of its own, which waits
    (up to 15 min) for another sandbox to release the NFS server."""
    if os.environ.get("OVAULT_TEST_SANDBOX_NO_NFS") != "1":
        yield request.getfixturevalue("sandbox")
        return
    import signal
    import sys
    from tests.helpers import Sandbox
    import tempfile
    # Short: the lab's qemu-nbd sockets live below it (a UNIX socket path has < 108 bytes).
    d = Path(tempfile.mkdtemp(prefix="ovault-al-"))
    deadline = time.monotonic() + 900
    while True:
        while not _nfs_free():
            assert time.monotonic() < deadline, f"the NFS server stayed busy ({NFS_LOCK})"
            time.sleep(5)
        log = open(d / "sandbox.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sandbox", "up", "--dir", str(d),
                              "--hosts", "1", "--vms", "1", "--disk-size", "128M",
                              "--address", SLIRP_HOST], cwd=REPO, stdout=log, stderr=log,
                             start_new_session=True)
        while not (d / "sandbox.json").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        log.close()
        if (d / "sandbox.json").exists():
            break
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        text = (d / "sandbox.log").read_text(errors="replace")
        assert "another NFS server" in text and time.monotonic() < deadline, text[-3000:]
    try:
        yield Sandbox(json.loads((d / "sandbox.json").read_text()), d)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(d, ignore_errors=True)


def _ssh(g: Guest, key: Path, command: str) -> str:
    r = subprocess.run(["ssh", "-i", str(key), "-p", str(g.ssh), "-o", "BatchMode=yes",
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                        "-o", "ConnectTimeout=10", "root@127.0.0.1", command],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


async def _run_job(g: Guest, token: str, method: str, path: str, body: dict, timeout: float) -> tuple[dict, list]:
    """Starts a job through the appliance's API and follows it on its websocket until it
    ends: (the final job, the machine states in order)."""
    import aiohttp
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the appliance's own cert
    base = f"https://127.0.0.1:{g.https}"
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
        async with http.ws_connect(base + "/api/v1/ws", headers=auth) as ws:
            assert (await ws.receive_json(timeout=30))["type"] == "ready"
            await ws.send_json({"type": "subscribe", "jobs": "*"})
            assert (await ws.receive_json(timeout=30))["type"] == "subscribed"
            async with http.request(method, base + path, json=body, headers=auth) as r:
                doc = await r.json()
                assert r.status == 202, doc
            jid = doc["job"]["id"]
            states, end = [], time.monotonic() + timeout
            while True:
                msg = await ws.receive(timeout=max(1.0, end - time.monotonic()))
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                m = json.loads(msg.data)
                if m.get("job_id") != jid:
                    continue
                if m["type"] == "machine.updated":
                    states.append(m["state"])
                if m["type"] == "job.updated" and m["state"] in ("succeeded", "failed", "canceled"):
                    break
        async with http.get(f"{base}/api/v1/jobs/{jid}", headers=auth) as r:
            return await r.json(), states


def test_backup_and_restore_from_inside_the_appliance(image, tmp_path, nfs_lab):
    """The seed points the appliance at the sandbox on this machine (engine, CA, NFS target);
    a backup and a restore of a sandbox VM run inside the appliance, driven over its API."""
    import asyncio
    if not shutil.which("genisoimage"):
        pytest.skip("genisoimage missing (scripts/setup.sh installs it)")
    lab = nfs_lab
    e = lab.engine
    port = e["api"].split(":")[2].split("/")[0]
    export = lab.info["target"]["path"]
    assert lab.info["target"]["nfs_url"] == f"nfs://127.0.0.1{export}"
    target_dir = f"appliance-{os.getpid()}-{int(time.time())}"  # the export may be the session's
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    user_data = "#cloud-config\n" + json.dumps({
        "hostname": "vault-lab",
        "ssh_authorized_keys": [key.with_suffix(".pub").read_text().strip()],
        "ovault": {
            "engine": {"url": f"https://{SLIRP_HOST}:{port}/ovirt-engine/api",
                       "username": e["username"], "password": e["password"],
                       "ca_pem": Path(e["ca_file"]).read_text()},
            "target": {"url": f"nfs://{SLIRP_HOST}{export}/{target_dir}", "name": "lab-nfs"},
            "movers": {"enabled": False},
        }}, indent=1)
    seed = make_seed(tmp_path, user_data, "instance-id: iid-lab-1\n")
    vm = lab.vm("db-primary")
    conn = lab.connect()
    vms = conn.system_service().vms_service()
    disks = [a.disk.id for a in vms.vm_service(vm["id"]).disk_attachments_service().list()]
    original = sorted(lab.digest(d) for d in disks)
    g = Guest(image, tmp_path, seed)
    restored_id = None

    def why(job: dict) -> str:  # the job and the service's log, when a job did not succeed
        return json.dumps(job, indent=1)[-4000:] + "\n" + _ssh(g, key, "journalctl -u ovault --no-pager | tail -40")
    try:
        t0 = time.monotonic()
        g.boot()
        # NFS checks the appliance's own user (AUTH_SYS uid of `ovault`) against the export's
        # permissions: its directory there belongs to that user, as on a real NFS server.
        deadline = time.monotonic() + 600
        while True:
            try:
                uid, gid = _ssh(g, key, "id -u ovault; id -g ovault").split()
                break
            except (AssertionError, subprocess.TimeoutExpired):
                assert time.monotonic() < deadline and g.proc.poll() is None, g.text()[-3000:]
                time.sleep(3)
        mine = Path(export) / target_dir
        mine.mkdir()
        os.chown(mine, int(uid), int(gid))
        g.wait_healthy()
        boot = time.monotonic() - t0
        assert e["password"] not in g.text()
        token = _ssh(g, key, "cat /var/lib/ovault/admin.token").strip()
        # Ready: the engine answered through 10.0.2.2 with the lab's CA, the NFS store opened.
        deadline = time.monotonic() + 120
        while (ready := g.get("/readyz"))[0] != 200:
            assert time.monotonic() < deadline, ready
            time.sleep(2)
        status, body = g.get(f"/api/v1/vms/{vm['id']}", token)
        assert status == 200 and json.loads(body)["name"] == "db-primary", body

        t1 = time.monotonic()
        job, states = asyncio.run(_run_job(g, token, "POST", "/api/v1/backups",
                                           {"vm_ids": [vm["id"]], "mode": "full"}, 900))
        backup_s = time.monotonic() - t1
        assert job["state"] == "succeeded", why(job)
        assert states == BACKUP_STATES, states
        backup_id = job["machines"][0]["backup_id"]
        # The backup is on the NFS export, written by the appliance's user.
        assert {p.stat().st_uid for p in mine.rglob("*")} == {int(uid)}

        t2 = time.monotonic()
        name = "restored-in-appliance"
        job, states = asyncio.run(_run_job(g, token, "POST", f"/api/v1/backups/{backup_id}/restore",
                                           {"kind": "new", "name": name}, 900))
        restore_s = time.monotonic() - t2
        assert job["state"] == "succeeded", why(job)
        assert states == RESTORE_STATES, states
        found = vms.list(search=f"name={name}")
        assert [v.name for v in found] == [name]
        restored_id = found[0].id
        rdisks = [a.disk.id for a in vms.vm_service(restored_id).disk_attachments_service().list()]
        assert sorted(lab.digest(d) for d in rdisks) == original
        left = lab.leftovers()
        assert not left["transfers"] and not left["backups"] and not left["locked_disks"], left
        assert not [s for s in left["snapshots"] if s["description"].startswith("ovault ")], left
        size = sum(conn.system_service().disks_service().disk_service(d).get().provisioned_size
                   for d in disks)
        print(f"appliance ({g.accel}) boot to /healthz {boot:.0f}s; full backup of {size >> 20} MiB "
              f"{backup_s:.0f}s, restore {restore_s:.0f}s")
    finally:
        g.stop()
        if restored_id:
            vms.vm_service(restored_id).remove()
        conn.close()
        shutil.rmtree(Path(export) / target_dir, ignore_errors=True)
