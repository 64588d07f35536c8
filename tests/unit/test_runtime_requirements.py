"""requirements-runtime.lock (what hosts and the appliance install) is current,
a subset of requirements.lock with the same pins, and holds no test tooling."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pins(name):
    return {line.split("==")[0].lower().replace("_", "-"): line
            for line in (ROOT / name).read_text().splitlines()
            if line and not line.startswith("#")}


def test_runtime_lock_is_a_current_subset_of_the_lock():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "runtime-requirements.py"), "--check"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    runtime, full = _pins("requirements-runtime.lock"), _pins("requirements.lock")
    assert runtime and set(runtime) < set(full)
    assert {n: full[n] for n in runtime} == runtime  # the same pins
    test_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    for tool in test_extra:
        assert tool.lower() not in runtime, tool
    for direct in ("aiohttp", "asyncpg", "ovirt-engine-sdk-python", "ovirt-imageio", "cryptography"):
        assert direct in runtime
