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


def test_the_playbooks_create_the_users():
    assert re.search(r"name: ovault\n\s+system: true", (DEPLOY / "ansible" / "appliance.yml").read_text())
    movers = (DEPLOY / "ansible" / "movers.yml").read_text()
    assert re.search(r"name: ovault-mover\n\s+system: true", movers)
    assert "ovault_imageio_group" in movers  # the group that opens imageio's socket
