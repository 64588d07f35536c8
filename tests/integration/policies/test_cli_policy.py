"""`ovault policy …`, `ovault prune`, `ovault protect` against the real app
(aiohttp test server over a real catalog)."""
import json
from datetime import datetime, timedelta, timezone

from orchestrator.cli import build_parser
from orchestrator.cli import policy as cli

UTC = timezone.utc


async def _ovault(papi, capsys, *argv):
    server = str(papi.client.make_url("")).rstrip("/")
    args = build_parser().parse_args([*argv, "--server", server, "--token", papi.admin])
    code = await cli.run(args)
    out = capsys.readouterr().out
    return code, out


async def test_policy_commands(papi, capsys):
    vm = papi.engine.add_vm("erp-1", tags=["prod"])
    papi.engine.add_vm("tmp-erp", tags=["prod"])
    code, out = await _ovault(papi, capsys, "policy", "create", "erp", "--schedule", "0 3 * * *",
                              "--timezone", "Europe/Paris", "--keep-last", "2", "--tag", "prod",
                              "--exclude-name-regex", "^tmp-", "--email", "ops@example.com")
    assert code == 0 and "erp (" in out and "member erp-1 (tag prod)" in out
    assert "excluded" in out
    code, out = await _ovault(papi, capsys, "policy", "list", "--json")
    [p] = json.loads(out)
    assert p["retention"] == {"keep_last": 2} and p["notify"]["emails"] == ["ops@example.com"]
    code, out = await _ovault(papi, capsys, "policy", "edit", "erp", "--keep-daily", "7", "--disable")
    assert code == 0 and "disabled" in out
    code, out = await _ovault(papi, capsys, "policy", "show", p["id"], "--json")
    shown = json.loads(out)
    assert shown["retention"] == {"keep_last": 2, "keep_daily": 7} and not shown["enabled"]
    await _ovault(papi, capsys, "policy", "edit", "erp", "--enable")
    # three backups: keep_last 2 prunes the oldest (and keep_daily keeps one per day)
    now = datetime.now(UTC)
    ids = []
    for h in (3, 2, 1):
        b = await papi.catalog.backups.create(vm_id=vm, vm_name="erp-1", mode="full", method="cbt")
        await papi.catalog.backups.complete(b.id, size_bytes=1, new_bytes=1, consistency="crash")
        await papi.catalog.db.execute("UPDATE backups SET created_at = $2 WHERE id = $1", b.id,
                                      now.replace(hour=12) - timedelta(days=h))
        ids.append(str(b.id))
    code, out = await _ovault(papi, capsys, "policy", "preview", "erp", "--vm", "erp-1")
    assert code == 0 and "keep-last" in out and "keep-daily" in out
    code, out = await _ovault(papi, capsys, "prune", "--dry-run", "--json")
    res = json.loads(out)
    assert res["dry_run"] and res["vms"][0]["pruned"] == []      # daily keeps all three
    code, out = await _ovault(papi, capsys, "protect", ids[0])
    assert code == 0 and "protected" in out and (await papi.catalog.backups.get(
        __import__("uuid").UUID(ids[0]))).protected
    code, out = await _ovault(papi, capsys, "protect", ids[0], "--off", "--json")
    assert json.loads(out)["protected"] is False
    code, out = await _ovault(papi, capsys, "policy", "run", "erp", "--json")
    r = json.loads(out)
    assert code == 0 and r["jobs"][0]["machines"][0]["vm_id"] == vm
    code, out = await _ovault(papi, capsys, "prune", "--vm", "erp-1")
    assert code == 0 and "(prune): queued" in out
    code, out = await _ovault(papi, capsys, "policy", "delete", "erp")
    assert code == 0 and "deleted (its backups stay)" in out
    assert await papi.catalog.policies.list() == []
