"""deploy/ansible passes ansible-lint on the production profile (any finding
fails), every playbook passes --syntax-check, and the appliance's TOML
configuration survives hostile values (quotes, backslashes, non-ASCII, a
newline) rendered by the role's own template through ansible-playbook."""
from __future__ import annotations

import os
import subprocess
import tomllib

import pytest

from tests.e2e.ansible_lab import ROOT, ansible_venv

pytestmark = pytest.mark.integration
ANSIBLE_DIR = ROOT / "deploy" / "ansible"
PLAYBOOKS = ("site.yml", "appliance.yml", "engine.yml", "movers.yml", "deploy_appliance_vm.yml")


def _env(venv, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    env.update({"HOME": str(home), "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1",
                "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"})
    return env


@pytest.fixture(scope="module")
def venv():
    return ansible_venv()


def test_ansible_lint_production_profile_is_clean(venv, tmp_path):
    p = subprocess.run([str(venv / "bin" / "ansible-lint"), "--offline", "--profile", "production",
                        "--nocolor", "--format", "pep8"], cwd=ANSIBLE_DIR, env=_env(venv, tmp_path),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"ansible-lint findings:\n{p.stdout[-6000:]}\n{p.stderr[-3000:]}"
    assert "Profile 'production' was required, and it passed" in p.stderr + p.stdout


def test_every_playbook_passes_syntax_check(venv, tmp_path):
    for book in PLAYBOOKS:
        p = subprocess.run([str(venv / "bin" / "ansible-playbook"), "--syntax-check",
                            "-i", "inventory.example.yml", book], cwd=ANSIBLE_DIR,
                           env=_env(venv, tmp_path), capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{book}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"


def test_example_inventory_values_carry_no_comments(venv, tmp_path):
    p = subprocess.run([str(venv / "bin" / "ansible-inventory"), "-i", "inventory.example.yml", "--list"],
                       cwd=ANSIBLE_DIR, env=_env(venv, tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "#" not in p.stdout and "CHANGE-ME" in p.stdout


HOSTILE = 'p"a\'ss\\word # not a comment\nline2 é'


def test_appliance_config_quotes_hostile_values(venv, tmp_path):
    """The role's template, rendered by ansible's template module with a
    password holding a quote, a backslash, '#', a newline and non-ASCII."""
    import json
    out = tmp_path / "ovault.toml"
    extra = {"ovault_appliance_engine_url": "https://engine.example.org/ovirt-engine/api",
                      "ovault_appliance_engine_password": HOSTILE,
                      "ovault_appliance_engine_ca_fetch": False,
                      "ovault_appliance_target_url": "nfs://nas/export/o\"vault",
                      "ovault_appliance_movers_hosts": {"id-1": "https://h1:54330"},
                      "ovault_appliance_movers_tokens": {"id-1": "tok\"en-1-0123456789"},
                      "ovault_appliance_cors_origins": ["https://engine.example.org"],
                      "ovault_appliance_extra_config": {"limits": {"total": 3},
                                                        "webhooks": {"enabled": False}}}
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [{"name": "Defaults and vars of the role", "ansible.builtin.include_vars": {
                            "file": str(ANSIBLE_DIR / "roles/ovault_appliance/defaults/main.yml")}},
                       {"name": "Role vars", "ansible.builtin.include_vars": {
                            "file": str(ANSIBLE_DIR / "roles/ovault_appliance/vars/main.yml")}},
                       {"name": "Render", "ansible.builtin.template": {
                            "src": str(ANSIBLE_DIR / "roles/ovault_appliance/templates/ovault.toml.j2"),
                            "dest": str(out), "mode": "0600"}}]}]
    (tmp_path / "play.json").write_text(json.dumps(play))
    (tmp_path / "extra.json").write_text(json.dumps(extra))  # extra vars win over the role's defaults
    p = subprocess.run([str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", "play.json",
                        "-e", "@extra.json",
                        "-e", f"ansible_python_interpreter={venv / 'bin' / 'python'}"],
                       cwd=tmp_path, env=_env(venv, tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:]
    cfg = tomllib.loads(out.read_text())
    assert cfg["engine"]["password"] == HOSTILE
    assert cfg["target"]["url"] == "nfs://nas/export/o\"vault"
    assert cfg["movers"]["hosts"] == {"id-1": "https://h1:54330"}
    assert cfg["movers"]["tokens"] == {"id-1": "tok\"en-1-0123456789"}
    assert cfg["listen"] == {"host": "0.0.0.0", "port": 8443, "tls": "auto", "cert_file": "", "key_file": ""}
    assert cfg["limits"] == {"total": 3} and cfg["webhooks"] == {"enabled": False}
    assert cfg["api"]["cors_origins"] == ["https://engine.example.org"]
    # and ovault itself loads it
    from orchestrator.config import load
    loaded = load(str(out))
    assert loaded.engine.password == HOSTILE and loaded.listen.port == 8443 and loaded.limits.total == 3
