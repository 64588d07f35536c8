"""The UI plugin's JavaScript passes ESLint (ui-plugin/eslint.config.js), and
every message key the code uses exists in its one strings module.

ESLint comes from ui-plugin/package-lock.json, installed by scripts/setup.sh
(`npm ci` into ui-plugin/node_modules); `./dev quick` and `./dev test` run the
setup first, so a missing ESLint is a broken set-up, and fails here.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "ui-plugin"
JS = PLUGIN / "ovault-resources" / "js"
ESLINT = PLUGIN / "node_modules" / ".bin" / "eslint"


def _node():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None or not ESLINT.exists():
        pytest.fail("ESLint is not installed: run ./dev setup (it runs `npm ci` in ui-plugin/)")
    return node


def test_eslint_finds_nothing_in_any_module():
    _node()
    r = subprocess.run([str(ESLINT), "--max-warnings", "0", "--format", "json", "."], cwd=PLUGIN,
                       capture_output=True, text=True, timeout=120)
    results = json.loads(r.stdout or "[]")
    findings = [f"{Path(x['filePath']).relative_to(PLUGIN)}:{m['line']}:{m['column']}: {m['message']} ({m.get('ruleId')})"
                for x in results for m in x["messages"]]
    assert r.returncode == 0 and not findings, "ESLint findings:\n" + "\n".join(findings) + r.stderr
    # every module was linted (none fell outside the configuration's patterns)
    linted = {Path(x["filePath"]) for x in results}
    assert set(JS.rglob("*.js")) <= linted


def test_the_plugin_rules_apply_to_the_modules():
    _node()
    for path in (JS / "plugin.js", JS / "views" / "wizard.js"):
        r = subprocess.run([str(ESLINT), "--print-config", str(path)], cwd=PLUGIN, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        rules = json.loads(r.stdout)["rules"]
        assert {"no-shadow", "no-unused-vars", "no-undef", "eqeqeq"} <= set(rules), path


def _message_keys() -> set[str]:
    r = subprocess.run([_node(), "--input-type=module", "-e",
                        "import { MESSAGE_KEYS } from './messages.js'; console.log(JSON.stringify(MESSAGE_KEYS));"],
                       cwd=JS, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_every_message_the_code_asks_for_exists():
    keys = _message_keys()
    used = {}
    for path in JS.rglob("*.js"):
        for key in re.findall(r"(?<![\w.])t\('([A-Za-z0-9_.]+)'", path.read_text()):
            used.setdefault(key, path.relative_to(JS))
    assert len(used) > 150
    missing = {k: str(p) for k, p in used.items() if k not in keys}
    assert not missing, f"message keys used but not in messages.js: {missing}"
    # every page in the places table has its module and its title
    places = (JS / "places.js").read_text()
    for view, module in re.findall(r"view: '(\w+)'.*?import\('\./(views/[\w-]+\.js)'\)", places):
        assert (JS / module).exists(), module
        if f"view: '{view}', token" in places and "where: 'dialog'" not in places.split(f"view: '{view}'")[1].split("\n")[0]:
            assert f"place.{view}" in keys, view


def test_user_facing_strings_live_in_the_messages_module():
    """No quoted English sentence in the code outside messages.js (log labels,
    API paths, CSS classes and HTML attribute names are not sentences)."""
    sentence = re.compile(r"""(['`])([A-Z][a-z]+(?: [a-z][a-z'’]*){2,}[.…]?)\1""")
    found = []
    for path in JS.rglob("*.js"):
        if path.name == "messages.js":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("//") or "console." in line:
                continue
            for m in sentence.finditer(line):
                found.append(f"{path.relative_to(JS)}:{n}: {m.group(2)}")
    assert not found, "\n".join(found)
