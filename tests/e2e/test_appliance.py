"""The appliance image boots: built by deploy/appliance/build.sh (the `./dev appliance`
command, cached by its inputs), booted under qemu-system-x86_64 from a snapshot overlay
with user-mode networking, once without a seed and once with a NoCloud seed.

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
