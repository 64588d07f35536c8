"""Running the `ovirt.ovirt` Ansible collection against the sandbox, as an
administrator runs it: a venv with a pinned `ansible` release (which bundles
the collection), the oVirt SDK and ovirt-imageio (for `ovirt_disk` uploads),
playbooks on localhost logging in with `ovirt_auth` with the lab's URL, CA
and credentials. Each task's registered result comes back as a dict.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.helpers import CACHE_DIR

ROOT = Path(__file__).resolve().parents[2]
# ansible 9.x bundles ovirt.ovirt 3.2.0 (checked with `pip download --no-deps ansible==9.13.0`).
ANSIBLE = "9.13.0"
COLLECTION = "3.2.0"
# The linter of deploy/ansible (tests/integration/test_ansible_lint.py); 24.12.x
# supports the ansible-core 2.16 that ansible 9.x brings.
ANSIBLE_LINT = "24.12.2"


def _pins() -> list[str]:
    """The venv gets the SDK and imageio versions the project itself uses."""
    return [f"ansible=={ANSIBLE}", f"ansible-lint=={ANSIBLE_LINT}",
            f"ovirt-engine-sdk-python=={metadata.version('ovirt-engine-sdk-python')}",
            f"ovirt-imageio=={metadata.version('ovirt-imageio')}"]


def ansible_venv() -> Path:
    """The venv (created once, keyed by the pins; a lock keeps parallel runs
    from building it twice). Raises with pip's output when it cannot be built."""
    pins = _pins()
    key = "-".join(p.replace("==", "_") for p in pins)
    base = CACHE_DIR / "ansible-venv"
    venv = base / key
    ready = venv / ".ready"
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists() and all((venv / "bin" / b).exists() for b in ("ansible-playbook", "ansible-lint")):
            return venv
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        p = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                            *pins], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"cannot build the Ansible venv ({' '.join(pins)}):\n"
                               f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        manifest = next((venv / "lib").glob(
            "python*/site-packages/ansible_collections/ovirt/ovirt/MANIFEST.json"))
        version = json.loads(manifest.read_text())["collection_info"]["version"]
        if version != COLLECTION:
            raise RuntimeError(f"ansible {ANSIBLE} bundles ovirt.ovirt {version}, not {COLLECTION}")
        ready.write_text(json.dumps(pins))
    return venv


class Playbooks:
    """Runs lists of tasks against one sandbox."""

    def __init__(self, venv: Path, sandbox, workdir: Path):
        self.venv, self.sandbox, self.workdir = venv, sandbox, workdir
        self.n = 0

    def run(self, tasks: list[dict], check: bool = True) -> dict:
        """Run `tasks` (each a dict with a unique `name`) after `ovirt_auth`;
        returns {task name: registered result}. A failing task fails the run
        unless it has `ignore_errors: true`."""
        self.n += 1
        d = self.workdir / f"play{self.n}"
        d.mkdir(parents=True)
        e = self.sandbox.engine
        regs = {}
        body = [{"name": "login", "ovirt.ovirt.ovirt_auth": {
            "url": e["api"], "username": e["username"], "password": e["password"],
            "ca_file": e["ca_file"]}}]
        for i, t in enumerate(tasks):
            reg = f"r{i}"
            regs[t["name"]] = "{{ %s | default(None) }}" % reg
            body.append({**t, "register": reg})
        out = d / "results.json"
        body.append({"name": "results", "ansible.builtin.copy": {
            "content": "{{ results | to_json }}", "dest": str(out)}})
        play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
                 "vars": {"ansible_python_interpreter": str(self.venv / "bin" / "python"),
                          "results": regs},
                 "tasks": body}]
        (d / "play.json").write_text(json.dumps(play, indent=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
        env.update({"HOME": str(d), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(d / "tmp"),
                    "ANSIBLE_REMOTE_TEMP": str(d / "tmp"), "ANSIBLE_HOST_KEY_CHECKING": "0",
                    "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
                    "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}"})
        p = subprocess.run([str(self.venv / "bin" / "ansible-playbook"), "-i", "localhost,",
                            str(d / "play.json")], capture_output=True, text=True, env=env,
                           cwd=d, timeout=600)
        (d / "output.txt").write_text(p.stdout + p.stderr)
        if check and (p.returncode != 0 or not out.exists()):
            raise AssertionError(f"ansible-playbook failed ({p.returncode}):\n{p.stdout[-6000:]}"
                                 f"\n{p.stderr[-2000:]}")
        return json.loads(out.read_text()) if out.exists() else {}
