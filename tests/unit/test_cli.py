"""The `ovault` CLI's own behaviour: registration, version, token files,
completion and progress output (the commands themselves are tested against
a real sandbox in tests/e2e/test_cli_*.py)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.cli import api, completion
from orchestrator.cli.common import CliError
from orchestrator.cli.progress import JobProgress, TaskProgress

ROOT = Path(__file__).resolve().parents[2]


def commands(parser) -> set[str]:
    return set(completion._subparsers(parser))


def test_every_command_module_registers_its_commands():
    names = commands(cli.build_parser())
    assert {"serve", "token", "backup", "restore", "backups", "jobs", "cancel", "verify", "gc", "export",
            "mount", "import", "completion"} <= names
    # From a checkout, the simulator's development commands are there too.
    assert {"sandbox", "demo"} <= names


def test_without_the_simulator_there_are_no_dev_commands(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "sandbox", None)  # import sandbox -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "sandbox.commands", raising=False)
    names = commands(cli.build_parser())
    assert "sandbox" not in names and "demo" not in names and "verify" in names


def test_importing_the_cli_does_not_import_the_simulator():
    code = "import sys, orchestrator.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'sandbox'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dev_commands_found_beside_the_checkout_from_elsewhere(tmp_path):
    """`ovault` run from another directory (sys.path without the checkout) still has `sandbox`."""
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', %r)]\n"
            "from orchestrator.cli import build_parser\n"
            "from orchestrator.cli.completion import _subparsers\n"
            "print(sorted(set(_subparsers(build_parser())) & {'sandbox', 'demo'}))" % str(ROOT))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    if "No module named 'orchestrator'" in out.stderr:
        pytest.skip("ovault is not installed in this interpreter (pip install -e .)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['demo', 'sandbox']"


def test_version_comes_from_package_metadata(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ovault {metadata.version('ovault')}"


def parse(*argv):
    return cli.build_parser().parse_args(list(argv))


def test_token_file_is_read_and_preferred(tmp_path, monkeypatch):
    monkeypatch.delenv("OVAULT_TOKEN", raising=False)
    monkeypatch.delenv("OVAULT_TOKEN_FILE", raising=False)
    f = tmp_path / "token"
    f.write_text("s3cret-token\n")
    assert api.given_token(parse("jobs", "--token-file", str(f))) == "s3cret-token"
    monkeypatch.setenv("OVAULT_TOKEN", "from-env")
    assert api.given_token(parse("jobs", "--token-file", str(f))) == "s3cret-token"
    assert api.given_token(parse("jobs")) == "from-env"
    monkeypatch.setenv("OVAULT_TOKEN_FILE", str(f))
    assert api.given_token(parse("jobs")) == "s3cret-token"
    assert api.given_token(parse("jobs", "--token", "argv")) == "argv"
    a = api.Api(parse("jobs", "--server", "https://o.example:8443"))
    assert a.token == "s3cret-token" and a.url == "https://o.example:8443"


def test_token_file_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("OVAULT_TOKEN_FILE", raising=False)
    with pytest.raises(CliError, match="cannot read the token file .*missing"):
        api.given_token(parse("jobs", "--token-file", str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CliError, match="is empty"):
        api.given_token(parse("jobs", "--token-file", str(tmp_path / "empty")))
    with pytest.raises(SystemExit):  # one or the other
        parse("jobs", "--token", "x", "--token-file", str(tmp_path / "empty"))


def complete(script: str, *words: str) -> list[str]:
    prog = (script + '\nCOMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _ovault\n'
            'printf "%s\\n" "${COMPREPLY[@]}"\n')
    out = subprocess.run(["bash", "-c", prog, "bash", *words], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_bash_completion_knows_commands_options_and_choices(capsys):
    assert cli.main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    assert complete(script, "ovault", "ba") == ["backup", "backups"]
    assert complete(script, "ovault", "token", "") == ["--help", "create", "list", "revoke"]
    assert complete(script, "ovault", "token", "create", "--role", "") == ["admin", "operator", "viewer"]
    assert complete(script, "ovault", "export", "B", "D", "f", "--format", "") == ["raw", "qcow2"]
    assert "--token-file" in complete(script, "ovault", "backup", "vm1", "--to")
    assert complete(script, "ovault", "completion", "") == ["--help", "bash", "zsh"]


def test_zsh_completion_loads_bashcompinit(capsys):
    assert cli.main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("autoload -U +X bashcompinit && bashcompinit\n")


def job(state, done, rate=None):
    return {"machines": [{"id": "m1", "vm_id": "v1", "vm_name": "db-primary", "state": state, "bytes_done": done,
                          "bytes_total": 4 << 20, "rate_bps": rate, "eta_seconds": 3.0 if rate else None,
                          "error": None}]}


def test_job_progress_off_a_terminal_prints_state_changes_only():
    buf = io.StringIO()
    with JobProgress(Console(file=buf, force_terminal=False)) as bars:
        for j in (job("transfer", 0), job("transfer", 1 << 20, 1 << 20), job("succeeded", 4 << 20)):
            bars.draw(j)
    lines = buf.getvalue().splitlines()
    assert [ln.split()[:2] for ln in lines] == [["db-primary", "transfer"], ["db-primary", "succeeded"]]


def test_job_progress_on_a_terminal_shows_the_servers_rate_and_eta():
    buf = io.StringIO()
    with JobProgress(Console(file=buf, force_terminal=True, width=160)) as bars:
        bars.draw(job("transfer", 1 << 20, 2 << 20))
    out = buf.getvalue()
    assert "db-primary" in out and "2.0 MiB/s" in out and "ETA 0:00:03" in out and "25%" in out


def test_task_progress_draws_on_a_terminal_and_stays_silent_elsewhere():
    tty, plain = io.StringIO(), io.StringIO()
    for buf, term in ((tty, True), (plain, False)):
        with TaskProgress("bytes", console=Console(file=buf, force_terminal=term, width=120)) as bars:
            step = bars.step("verify 1234abcd")
            step(0, 8 << 20)
            step(8 << 20, 8 << 20)
    assert "verify 1234abcd" in tty.getvalue() and "100%" in tty.getvalue()
    assert plain.getvalue() == ""
