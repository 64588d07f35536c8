"""The deployed services are hardened: `systemd-analyze security` rates each
unit in deploy/systemd at an exposure of 4.0 or less ("OK"), offline (the units
need not be installed), and each runs as its dedicated user without
capabilities."""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = {"ovault.service": "ovault", "ovault-mover.service": "ovault-mover"}
MAX_EXPOSURE = 4.0


def _exposure(unit: Path, tmp_path: Path) -> float:
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: scripts/setup.sh installs it (Debian package systemd)"
    p = subprocess.run([exe, "security", "--offline=true", "--no-pager", str(unit)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", p.stdout + p.stderr)
    assert m, f"no exposure level in systemd-analyze's output:\n{p.stdout}\n{p.stderr}"
    return float(m.group(1))


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exposure_is_at_most_4(name, tmp_path):
    level = _exposure(DEPLOY / "systemd" / name, tmp_path)
    assert level <= MAX_EXPOSURE, f"{name}: systemd-analyze security exposure {level} > {MAX_EXPOSURE}"


@pytest.mark.parametrize("name,user", sorted(UNITS.items()))
def test_runs_as_its_own_user_without_capabilities(name, user):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string((DEPLOY / "systemd" / name).read_text())
    svc = unit["Service"]
    assert svc["User"] == user and svc["Group"] == user
    assert svc["CapabilityBoundingSet"] == "" and svc["NoNewPrivileges"] == "yes"
    assert svc["ProtectSystem"] == "strict" and svc["PrivateTmp"] == "yes"


def _user_tasks():
    """Every `user` task in deploy/ansible (plays and roles), its name resolved
    through the roles' defaults."""
    import yaml
    root = DEPLOY / "ansible"
    defaults = {}
    for f in root.rglob("defaults/main.yml"):
        defaults.update(yaml.safe_load(f.read_text()) or {})

    def tasks(node):
        if isinstance(node, list):
            for x in node:
                yield from tasks(x)
        elif isinstance(node, dict):
            yield node
            for k in ("tasks", "block", "pre_tasks", "post_tasks"):
                yield from tasks(node.get(k))

    for f in root.rglob("*.yml"):
        for t in tasks(yaml.safe_load(f.read_text())):
            spec = t.get("ansible.builtin.user") or t.get("user")
            if isinstance(spec, dict):
                name = re.sub(r"{{\s*(\w+)\s*}}", lambda m: str(defaults.get(m.group(1), m.group(0))),
                              str(spec.get("name")))
                yield name, spec


def test_the_playbooks_create_the_users():
    users = {name: spec for name, spec in _user_tasks()}
    for name in UNITS.values():
        assert name in users, f"no Ansible task creates the system user {name}"
        assert users[name].get("system") is True
