"""`ovault key … --target NAME`: the key of another target of the catalog (a
policy's), found by its name in the real catalog."""
from __future__ import annotations

from orchestrator import cli, store_keys
from orchestrator.config import Config


async def test_key_export_and_import_for_a_policy_target(catalog, dsn, tmp_path, monkeypatch, capsys):
    (tmp_path / "main").mkdir()
    (tmp_path / "vault3").mkdir()
    state = tmp_path / "state"
    await catalog.targets.create("vault3", str(tmp_path / "vault3"), {"encrypt": True})
    cfg = Config(state_dir=str(state))
    cfg.target.url = str(tmp_path / "main")
    store = await store_keys.open_target(cfg, "vault3", str(tmp_path / "vault3"), encrypt=True)
    fp = store.config.key_fingerprint
    await store.close()
    monkeypatch.setenv("OVAULT_TARGET__URL", str(tmp_path / "main"))
    monkeypatch.setenv("OVAULT_DATABASE__DSN", dsn)
    args = ["--target", "vault3", "--state-dir", str(state)]

    def run(*argv):
        rc = await_in_thread(cli.main, list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, paper, err = run("key", "export", "--paper", *args)
    assert rc == 0 and f"fingerprint {fp}" in paper, err
    key_file = state / "keys" / "vault3.key"
    key_file.unlink()
    rc, out, _ = run("key", "show", *args)
    assert rc == 1 and "MISSING" in out and str(key_file) in out
    (tmp_path / "sheet").write_text(paper)
    rc, out, err = run("key", "import", str(tmp_path / "sheet"), *args)
    assert rc == 0 and str(key_file) in out, err
    rc, _, err = run("key", "show", "--target", "nope", "--state-dir", str(state))
    assert rc == 1 and "no target named 'nope'" in err


def await_in_thread(fn, argv):
    """cli.main runs its own event loop: run it off this test's loop."""
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(fn, argv).result()


