"""roles/ovault_appliance and roles/ovault_mover converge on a Debian 12 root made by the test: the
appliance playbook, through Ansible's chroot connection, installs packages,
the service user, a release with the runtime-only venv, the configuration and
the unit; a second run reports changed=0. Then the service is started inside
the root as the `ovault` user (systemd does not run in a chroot: the unit's
StateDirectory is made by hand) against the sandbox engine and answers
/healthz over HTTPS with its embedded catalog. Needs root, mmdebstrap (the
root is cached in the tests' cache folder, tests.helpers.CACHE_DIR) and the package mirrors."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.ansible_lab import ROOT, ansible_venv
from tests.helpers import CACHE_DIR

pytestmark = pytest.mark.e2e
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
INCLUDE = "python3,python3-apt,ca-certificates"
ROOT_TAR = CACHE_DIR / "debian-root" / "bookworm-minbase-python3.tar"


def _mirror() -> str:
    for f in Path("/etc/apt/sources.list.d").glob("*.sources"):
        m = re.search(r"^URIs:\s*(\S+)", f.read_text(), re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _root_tar() -> Path:
    if not ROOT_TAR.exists():
        ROOT_TAR.parent.mkdir(parents=True, exist_ok=True)
        tmp = ROOT_TAR.with_suffix(".partial")
        subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={INCLUDE}", "bookworm",
                        str(tmp), _mirror()], check=True, capture_output=True, timeout=900)
        tmp.rename(ROOT_TAR)
    return ROOT_TAR


def _inside(root: Path) -> list[str]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "root") == str(root):
                    out.append(p.name)
            except OSError:
                pass
    return out


@pytest.fixture
def debian_root():
    if os.geteuid() != 0 or not shutil.which("mmdebstrap") and not ROOT_TAR.exists():
        pytest.skip("needs root and mmdebstrap")
    tar = _root_tar()
    root = Path(tempfile.mkdtemp(prefix="ovault-converge-", dir="/var/tmp"))
    mounts = []
    try:
        subprocess.run(["tar", "-xpf", str(tar), "-C", str(root)], check=True)
        for f in ("/etc/resolv.conf", "/etc/hosts", "/etc/pip.conf", "/root/.config/pip/pip.conf"):
            if os.path.exists(f):
                (root / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, root / f.lstrip("/"))
        subprocess.run(f"cp -a /etc/apt/sources.list* /etc/apt/apt.conf.d {root}/etc/apt/ 2>/dev/null; "
                       f"cp -a /usr/local/share/ca-certificates/. {root}/usr/local/share/ca-certificates/ "
                       f"2>/dev/null; true", shell=True)
        # the host's local CAs (package mirrors and proxies) trusted inside too
        subprocess.run(["chroot", str(root), "update-ca-certificates"], check=True, capture_output=True)
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (root / "usr/sbin/policy-rc.d").chmod(0o755)

        def mount(*args, target):
            subprocess.run(["mount", *args, str(target)], check=True)
            mounts.append(target)
        mount("-t", "proc", "proc", target=root / "proc")
        mount("--bind", "/sys", target=root / "sys")
        mount("--bind", "/dev", target=root / "dev")
        mount("-t", "tmpfs", "-o", "mode=1777", "shm", target=root / "dev/shm")
        mount("-t", "tmpfs", "-o", "mode=0755", "run", target=root / "run")
        mount("-t", "tmpfs", "-o", "mode=1777", "tmp", target=root / "tmp")
        for d in Path("/opt").iterdir():  # local package mirrors pip's configuration points at
            if d.is_dir() and not d.is_symlink():
                (root / "opt" / d.name).mkdir(parents=True, exist_ok=True)
                mount("--bind", str(d), target=root / "opt" / d.name)
                subprocess.run(["mount", "-o", "remount,bind,ro", str(root / "opt" / d.name)], check=True)
        yield root
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _inside(root):
                try:
                    os.kill(int(pid), sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)])
        shutil.rmtree(root, ignore_errors=True)


def _head() -> str:
    """The revision both runs install (other commits may land meanwhile)."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _play(venv, workdir: Path, inventory: Path, extra: Path, playbook: str = "appliance.yml",
          env_extra: dict | None = None, args: tuple = (), ok: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update({"HOME": str(workdir), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(workdir / "tmp"),
                "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
                "ANSIBLE_ROLES_PATH": str(ANSIBLE_DIR / "roles"),
                "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", **(env_extra or {})})
    p = subprocess.run([str(venv / "bin" / "ansible-playbook"), "-i", str(inventory),
                        str(ANSIBLE_DIR / playbook), "-e", f"@{extra}", *args],
                       capture_output=True, text=True, env=env, cwd=workdir, timeout=1800)
    out = p.stdout + p.stderr
    (workdir / f"run-{time.monotonic_ns()}.log").write_text(out)
    assert (p.returncode == 0) == ok, out[-8000:]
    return out


def _recap(out: str) -> dict:
    m = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
    assert m, out[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def test_appliance_role_converges_twice_and_the_service_answers(debian_root, sandbox, tmp_path):
    venv = ansible_venv()
    root = debian_root
    port = _free_port()
    e = sandbox.engine
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[appliance]\n{root} ansible_connection=community.general.chroot "
                         f"ansible_python_interpreter=/usr/bin/python3 ansible_become=false\n")
    extra = tmp_path / "extra.json"
    password = 'pa"ss\\wo#rd'  # quoted safely or the service would not start
    extra.write_text(json.dumps({
        "ovault_appliance_src": str(ROOT), "ovault_appliance_ref": _head(),
        "ovault_appliance_manage_service": False,
        "ovault_appliance_engine_url": e["api"], "ovault_appliance_engine_username": e["username"],
        "ovault_appliance_engine_password": e["password"],
        "ovault_appliance_engine_ca_pem": Path(e["ca_file"]).read_text(),
        "ovault_appliance_target_url": "/srv/ovault-target",
        "ovault_appliance_listen_host": "127.0.0.1", "ovault_appliance_listen_port": port,
        "ovault_appliance_movers_token": password + "-0123456789",
        "ovault_appliance_extra_config": {"movers": {"enabled": False}}}))
    first = _recap(_play(venv, tmp_path, inventory, extra))
    assert first["failed"] == 0 and first["changed"] > 5
    second_out = _play(venv, tmp_path, inventory, extra)
    changed = [line for line in second_out.splitlines() if line.startswith("changed:")]
    assert _recap(second_out)["changed"] == 0, "\n".join(changed) + second_out[-5000:]

    # What the role laid down.
    link = root / "opt/ovault"
    assert link.is_symlink() and os.readlink(link).startswith("/opt/ovault-releases/")
    cfg = root / "etc/ovault/ovault.toml"
    st = cfg.stat()
    assert oct(st.st_mode & 0o777) == "0o640" and st.st_uid == 0
    import tomllib
    assert tomllib.loads(cfg.read_text())["movers"]["token"] == password + "-0123456789"
    assert (root / "etc/systemd/system/ovault.service").read_text() == \
        (ROOT / "deploy/systemd/ovault.service").read_text()
    release = root / os.readlink(link).lstrip("/")  # the link is absolute inside the root
    site = next((release / ".venv/lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in [*site.glob("*.dist-info"), *site.glob("*.egg-info")]}
    assert {"aiohttp", "asyncpg", "ovirt_imageio", "ovault"} <= installed
    assert not installed & {"pytest", "playwright", "schemathesis", "aioresponses"}  # runtime only

    # The service, as its unit would run it (StateDirectory made by hand).
    subprocess.run(["chroot", str(root), "install", "-d", "-o", "ovault", "-g", "ovault", "-m", "0700",
                    "/var/lib/ovault", "/srv/ovault-target"], check=True)
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(["chroot", str(root), "setpriv", "--reuid=ovault", "--regid=ovault",
                              "--init-groups", "env", "-i", "PATH=/usr/bin:/bin", "HOME=/var/lib/ovault",
                              "/opt/ovault/.venv/bin/ovault", "serve", "--config", "/etc/ovault/ovault.toml"],
                             stdout=log, stderr=log, start_new_session=True)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # tls=auto: its own certificate
        deadline, status, body = time.monotonic() + 180, None, b""
        while time.monotonic() < deadline and serve.poll() is None:
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=5) as r:
                    status, body = r.status, r.read()
                    break
            except OSError:
                time.sleep(1)
        assert status == 200, (tmp_path / "serve.log").read_text()[-4000:]
        assert json.loads(body).get("status") in ("ok", "up", "healthy") or body
        assert (root / "var/lib/ovault/pg/postgres/data/PG_VERSION").exists()  # the embedded catalog
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()


def _check_socket_access(root: Path, groups: list[str]) -> None:
    """The layout of an oVirt host's sockets, made in the root: imageio's control
    socket (0660 in a 0750 folder, the daemon's ovirtimg:ovirtimg), a qemu-nbd
    socket of vdsm's (0660 vdsm:kvm in /run/vdsm/nbd) and a VM backup's socket
    (made by qemu, umask 002: 0775 qemu:qemu, in /run/vdsm/backup 0770 vdsm:kvm).
    The mover's user connects to each with `groups` and to none without them."""
    layout = {"run/ovirt-imageio/sock": ("root:ovirtimg", 0o750, 0o660),
              "run/vdsm/nbd/f00d.sock": ("root:kvm", 0o755, 0o660),
              "run/vdsm/backup/b4c2": ("root:qemu", 0o770, 0o775)}
    folders = {"run/ovirt-imageio": "root:ovirtimg", "run/vdsm": "root:kvm", "run/vdsm/nbd": "root:kvm",
               "run/vdsm/backup": "root:kvm"}
    listeners = []
    try:
        for rel, owner in folders.items():
            (root / rel).mkdir(parents=True, exist_ok=True)
            subprocess.run(["chroot", str(root), "chown", owner, "/" + rel], check=True)
        for rel, (owner, dir_mode, mode) in layout.items():
            path = root / rel
            s = socket.socket(socket.AF_UNIX)
            s.bind(str(path))
            s.listen(4)
            listeners.append(s)
            subprocess.run(["chroot", str(root), "chown", owner, "/" + rel], check=True)
            path.chmod(mode)
            path.parent.chmod(dir_mode)
        probe = ("import socket, sys\n"
                 "for p in sys.argv[1:]:\n"
                 "    s = socket.socket(socket.AF_UNIX)\n"
                 "    try:\n"
                 "        s.connect(p); print(p, 'ok')\n"
                 "    except OSError as e:\n"
                 "        print(p, type(e).__name__)\n")
        paths = ["/" + rel for rel in layout]
        for extra, expect in (([f"--groups={','.join(groups)}"], "ok"), (["--clear-groups"], "PermissionError")):
            p = subprocess.run(["chroot", str(root), "setpriv", "--reuid=ovault-mover", "--regid=ovault-mover",
                                *extra, "python3", "-c", probe, *paths],
                               capture_output=True, text=True, timeout=60, check=True)
            assert p.stdout.split() == [w for path in paths for w in (path, expect)], p.stdout + p.stderr
    finally:
        for s in listeners:
            s.close()
        shutil.rmtree(root / "run/ovirt-imageio", ignore_errors=True)
        shutil.rmtree(root / "run/vdsm", ignore_errors=True)


@pytest.mark.timeout(900)  # four playbook runs, a release's venv and the root's removal
def test_mover_role_converges_twice_with_el_facts(debian_root, tmp_path):
    """ovault_mover on the Debian root dressed as an EL 9 host: the facts come
    from a fact cache (os_family RedHat, major version 9, SELinux disabled),
    dnf, firewalld and systemd are left out (packages_install and
    manage_service false; the build tools are put in with apt), a fake vdsm
    certificate pair stands in for the host's. Bookworm's python3.11 is the
    interpreter the role asks for. What is not exercised here: dnf, seport,
    firewalld and the unit's start, which need a real EL host.

    The host's socket layout is laid out as vdsm and ovirt-imageio leave it
    (docs/mover.md, *Deployment beside imageio*): without the groups ovirtimg,
    kvm and qemu the role stops with their names; with them the unit's drop-in
    lists them, and the mover's user, holding them, reaches the control socket
    and the NBD sockets that it cannot reach without them. A --check run that
    turns direct NBD off reports the drop-in, the configuration and the restart
    and changes nothing."""
    venv = ansible_venv()
    root = debian_root
    subprocess.run(["chroot", str(root), "sh", "-c",
                    "apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
                    "python3-venv python3-dev gcc libxml2-dev python3-packaging >/dev/null"], check=True, timeout=900)
    pki = root / "etc/pki/vdsm"
    (pki / "certs").mkdir(parents=True)
    (pki / "keys").mkdir(parents=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=host1.example.org", "-keyout", str(pki / "keys/vdsmkey.pem"),
                    "-out", str(pki / "certs/vdsmcert.pem")], check=True, capture_output=True)
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "host1.example.org").write_text(json.dumps({
        "ansible_os_family": "RedHat", "ansible_distribution": "RedHat",
        "ansible_distribution_major_version": "9", "ansible_fqdn": "host1.example.org",
        "ansible_selinux": {"status": "disabled"}, "module_setup": True,
        "_ansible_facts_gathered": True}))
    cache = {"ANSIBLE_GATHERING": "smart", "ANSIBLE_CACHE_PLUGIN": "jsonfile",
             "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(facts), "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "0"}
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"[hosts]\nhost1.example.org ansible_host={root} ansible_connection=community.general.chroot "
                         f"ansible_python_interpreter=/usr/bin/python3 ansible_become=false\n")
    port = _free_port()
    token = 'host1-"token"\\0123456789'
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({
        "ovault_mover_src": str(ROOT), "ovault_mover_ref": _head(), "ovault_mover_token": token,
        "ovault_mover_packages_install": False, "ovault_mover_manage_service": False,
        "ovault_mover_port": port, "ovault_mover_allowed_stores": "nfs://nas/export/ovault"}))
    # No vdsm/imageio groups yet: a clear stop before anything is installed.
    out = _play(venv, tmp_path, inventory, extra, "movers.yml", cache, ok=False)
    present = {line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    m = re.search(r"missing groups ([\w, -]+):", out)
    assert m and m.group(1).split(", ") == [g for g in ("ovirtimg", "kvm", "qemu") if g not in present], out[-3000:]
    assert "ovault_mover_direct_nbd" in out
    assert not (root / "opt/ovault").exists()
    for group in ("ovirtimg", "kvm", "qemu"):  # what vdsm's and ovirt-imageio's packages create
        subprocess.run(["chroot", str(root), "groupadd", "-f", "-r", group], check=True)
    first = _recap(_play(venv, tmp_path, inventory, extra, "movers.yml", cache))
    assert first["failed"] == 0 and first["changed"] > 5
    out = _play(venv, tmp_path, inventory, extra, "movers.yml", cache)
    changed = [line for line in out.splitlines() if line.startswith("changed:")]
    assert _recap(out)["changed"] == 0, "\n".join(changed) + out[-5000:]
    assert "An EL 8 or 9 host" in out  # the EL facts were the ones used

    import tomllib
    cfg = tomllib.loads((root / "etc/ovault/mover.toml").read_text())["mover"]
    assert cfg["imageio_socket"] == "\0/org/ovirt/imageio"  # the data socket, not the control one
    assert cfg["imageio_control_socket"] == "/run/ovirt-imageio/sock"  # read for a ticket's NBD backend
    dropin = root / "etc/systemd/system/ovault-mover.service.d/50-socket-groups.conf"
    groups = re.search(r"^SupplementaryGroups=(.*)$", dropin.read_text(), re.M).group(1).split()
    assert groups == ["ovirtimg", "kvm", "qemu"]
    members = {line.split(":")[0]: line.strip().split(":")[3].split(",")
               for line in (root / "etc/group").read_text().splitlines()}
    assert not [g for g in groups if "ovault-mover" in members[g]]  # the unit holds them, not the account
    _check_socket_access(root, groups)

    # --check with direct NBD off: the drop-in and configuration would change and
    # the mover restart; nothing is written.
    before = dropin.read_text(), (root / "etc/ovault/mover.toml").read_text()
    out = _play(venv, tmp_path, inventory, extra, "movers.yml", cache,
                args=("--check", "--diff", "-e", "ovault_mover_direct_nbd=false"))
    assert _recap(out)["failed"] == 0, out[-5000:]
    changed = {block.split("]")[0] for block in out.split("TASK [")[1:] if "\nchanged: " in block}
    # (pip's check mode always reports a requirements file as a change)
    assert changed - {"ovault_install : Runtime dependencies in the release's venv"} == {
        "ovault_mover : Configuration", "ovault_mover : Socket groups of the unit (drop-in)"}, changed
    task = out.split("TASK [ovault_mover : Socket groups of the unit (drop-in)]")[1].split("TASK [")[0]
    assert "-SupplementaryGroups=ovirtimg kvm qemu" in task and "+SupplementaryGroups=\n" in task + "\n"
    assert "changed: [host1.example.org]" in task
    task = out.split("TASK [ovault_mover : Configuration]")[1].split("TASK [")[0]
    assert '-imageio_control_socket = "/run/ovirt-imageio/sock"' in task
    assert '+imageio_control_socket = ""' in task
    assert "RUNNING HANDLER [ovault_mover : Restart ovault-mover]" in out
    assert (dropin.read_text(), (root / "etc/ovault/mover.toml").read_text()) == before
    assert cfg["imageio_url"] == "https://host1.example.org:54322" and cfg["port"] == port
    assert (root / "etc/ovault/mover.token").read_text() == token + "\n"
    assert oct((root / "etc/ovault/mover.token").stat().st_mode & 0o777) == "0o640"
    assert (root / "etc/systemd/system/ovault-mover.service").read_text() == \
        (ROOT / "deploy/systemd/ovault-mover.service").read_text()
    # the mover starts with that configuration, as its user, and answers over TLS
    log = open(tmp_path / "mover.log", "wb")
    mover = subprocess.Popen(["chroot", str(root), "setpriv", "--reuid=ovault-mover", "--regid=ovault-mover",
                              "--init-groups", "env", "-i", "PATH=/usr/bin:/bin",
                              "/opt/ovault/.venv/bin/ovault-mover", "serve", "--config", "/etc/ovault/mover.toml"],
                             stdout=log, stderr=log, start_new_session=True)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and mover.poll() is None:
            try:
                req = urllib.request.Request(f"https://127.0.0.1:{port}/v1/health",
                                             headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                    status = r.status
                    break
            except urllib.error.HTTPError as e:
                status = e.code
                break
            except OSError:
                time.sleep(1)
        assert status == 200, (tmp_path / "mover.log").read_text()[-4000:]
    finally:
        os.killpg(mover.pid, signal.SIGTERM)
        try:
            mover.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(mover.pid, signal.SIGKILL)
        log.close()
