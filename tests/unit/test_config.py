"""The one configuration loader: file, environment, unknown keys, masking, and
the documentation's tables of every option."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from imageio_ext import config as loader
from imageio_ext import mover_cli
from imageio_ext.mover import config as mover_config
from imageio_ext.mover.config import MoverConfig
from orchestrator import config
from orchestrator.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOKEN = "m" * 32


def test_file_then_environment_override_the_defaults(tmp_path):
    f = tmp_path / "ovault.toml"
    f.write_text('state_dir = "/srv/a"\n[limits]\ntotal = 6\nper_job = 3\n[engine]\nca_file = "/etc/ca.pem"\n')
    cfg = config.load(f, env={
        "OVAULT_LIMITS_TOTAL": "3",  # the environment beats the file
        "OVAULT_LIMITS__PER_HOST": "1",  # a doubled separator is the same scheme
        "OVAULT_ENGINE_INSECURE": "yes",
        "OVAULT_STATE_DIR": "/srv/b",
        "OVAULT_MOVERS_HOSTS": '{"h1": "https://h1:54330"}',
        "OVAULT_API_CORS_ORIGINS": "https://a.example, https://b.example",
        # not this program's options: left alone
        "OVAULT_SERVER": "https://x", "OVAULT_TOKEN": "t", "OVAULT_MOVER_TOKEN": "x",
        "OVAULT_TEST_SANDBOX_NO_NFS": "1", "OVAULT_LOG_LEVEL": "debug",
    })
    assert (cfg.state_dir, cfg.limits.total, cfg.limits.per_job, cfg.limits.per_host) == ("/srv/b", 3, 3, 1)
    assert cfg.engine.ca_file == "/etc/ca.pem" and cfg.engine.insecure is True
    assert cfg.movers.hosts == {"h1": "https://h1:54330"}
    assert cfg.api.cors_origins == ["https://a.example", "https://b.example"]
    assert config.Config().limits.total == 8  # defaults untouched


@pytest.mark.parametrize("toml,env,match", [
    ("[limits]\ntotl = 1\n", {}, "unknown key limits.totl"),
    ("bogus = 1\n", {}, "unknown key bogus"),
    ("limits = 3\n", {}, "limits must be a table"),
    ("", {"OVAULT_ENGINE_PASWORD": "x"}, "unknown key engine.pasword .*OVAULT_ENGINE_PASWORD"),
    ("", {"OVAULT_LIMITS_TOTAL": "many"}, "limits.total"),
    ("", {"OVAULT_ENGINE_INSECURE": "perhaps"}, "not a boolean"),
    ("[target]\nurl = 3.5\nchunk_size_kib = 1.5\n", {}, "target.chunk_size_kib"),
    ("[limits\n", {}, "cannot read"),
    ("[backup]\nconsistency = \"always\"\n", {}, "backup.consistency: .*not one of prefer, require, crash"),
    ("", {"OVAULT_BACKUP_CONSISTENCY": ""}, "backup.consistency"),
])
def test_unknown_keys_and_bad_values_fail_fast(tmp_path, toml, env, match):
    f = tmp_path / "c.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError, match=match):
        config.load(f, env=env)


def test_show_config_masks_secrets(tmp_path, capsys):
    from orchestrator.cli import main
    f = tmp_path / "c.toml"
    f.write_text('[engine]\nurl = "https://e/ovirt-engine/api"\npassword = "engine-pw-1"\n'
                 '[movers]\ntoken = "mover-token-2"\n[database]\ndsn = "postgresql://u:db-pw-3@h/db"\n')
    assert main(["serve", "--config", str(f), "--show-config"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    for secret in ("engine-pw-1", "mover-token-2", "db-pw-3"):
        assert secret not in out
    assert shown["engine"]["password"] == shown["movers"]["token"] == shown["database"]["dsn"] == loader.MASK
    assert shown["engine"]["url"] == "https://e/ovirt-engine/api" and shown["limits"]["total"] == 8


def test_mover_uses_the_same_scheme(tmp_path, monkeypatch, capsys):
    f = tmp_path / "m.toml"
    f.write_text(f'[mover]\nport = 1234\ntoken = "{TOKEN}"\nallowed_stores = "/srv/ovault"\n')
    cfg = MoverConfig.load(str(f), env={"OVAULT_MOVER_MAX_COPIES": "7", "OVAULT_MOVER__KEEP_FINISHED": "5",
                                        "OVAULT_LIMITS_TOTAL": "x", "OVAULT_MOVERS_TOKEN": "y"})
    assert (cfg.port, cfg.max_copies, cfg.keep_finished, cfg.token) == (1234, 7, 5.0, TOKEN)
    with pytest.raises(ConfigError, match="unknown key tokne .*OVAULT_MOVER_TOKNE"):
        MoverConfig.load(env={"OVAULT_MOVER_TOKNE": "x"})
    monkeypatch.setenv("OVAULT_MOVER_TOKEN", TOKEN)
    monkeypatch.setenv("OVAULT_MOVER_ALLOWED_STORES", "/srv/ovault")
    assert mover_cli.main(["--show-config", "--port", "4321"]) == 0
    out = capsys.readouterr().out
    assert TOKEN not in out and json.loads(out)["token"] == loader.MASK and json.loads(out)["port"] == 4321


@pytest.mark.parametrize("cls", [config.Config, MoverConfig])
def test_every_option_has_a_comment(cls):
    missing = [key for key, _, note in loader.reference(cls() if cls is config.Config else
                                                        MoverConfig(token=TOKEN)) if not note]
    assert not missing, f"options without a comment in their class: {missing}"


@pytest.mark.parametrize("doc,table", [
    ("operations.md", config.reference_table),
    ("mover.md", mover_config.reference_table),
])
def test_docs_list_every_option(doc, table):
    """The docs hold the generated table; regenerate it with `python -m orchestrator.config`
    (`--mover` for docs/mover.md) when an option is added, renamed or re-commented."""
    text = (DOCS / doc).read_text()
    m = re.search(r"<!-- generated from [^\n]*-->\n(.*?)\n<!-- end of generated table -->", text, re.S)
    assert m, f"docs/{doc} has no generated configuration table"
    want = table()
    documented = set(re.findall(r"^\| `([^`]+)` \|", m.group(1), re.M))
    keys = set(re.findall(r"^\| `([^`]+)` \|", want, re.M))
    assert not keys - documented, f"undocumented in docs/{doc}: {sorted(keys - documented)}"
    assert not documented - keys, f"documented but not options: {sorted(documented - keys)}"
    assert m.group(1) == want, f"docs/{doc}: the table differs from `python -m orchestrator.config`"
