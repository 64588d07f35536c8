"""The one configuration loader of the orchestrator and the mover.

A program's configuration is a dataclass of typed defaults, one comment per
option (on its line or just above it), with nested dataclasses for sections.
Sources, later wins:

1. the defaults in code;
2. a TOML file (tables are sections);
3. environment variables ``OVAULT_<SECTION>_<KEY>`` (top-level keys
   ``OVAULT_<KEY>``), matched against the schema, so ``OVAULT_ENGINE_CA_FILE``
   is ``engine.ca_file``; the separator after the section may be doubled for
   readability (``OVAULT_ENGINE__CA_FILE``). The mover's options are the
   ``[mover]`` section: ``OVAULT_MOVER_TOKEN``;
4. command-line flags (the program passes them as overrides).

An unknown key fails fast, in the file and in the environment (a variable
whose name starts with a known section, or is ``OVAULT_`` plus something that
is neither a section nor a key, belongs to someone else and is left alone).
`masked` is what ``--show-config`` prints: the effective configuration with
every secret replaced. `reference` lists every option with its default and
comment; the documentation's configuration tables are generated from it and a
unit test keeps them equal.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError

__all__ = ["ConfigError", "apply", "load_file", "apply_env", "masked", "reference", "reference_table",
           "is_secret", "MASK", "ENV_PREFIX"]

ENV_PREFIX = "OVAULT_"
MASK = "********"
_SECRET_NAMES = {"password", "token", "tokens", "secret", "dsn"}


def is_secret(name: str) -> bool:
    """Options whose value is a credential (a DSN may hold a password)."""
    return name in _SECRET_NAMES or name.endswith(("_password", "_token", "_secret"))


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def apply(obj: Any, data: Mapping[str, Any], where: str = "", source: str = "") -> None:
    """Set ``data`` (nested dicts for sections) on the dataclass ``obj``, coercing each
    value to the type of the default it replaces; unknown keys raise ConfigError."""
    names = {f.name for f in dataclasses.fields(obj)}
    for k, v in data.items():
        if k not in names:
            raise ConfigError(f"unknown key {where}{k}" + (f" in {source}" if source else ""))
        cur = getattr(obj, k)
        if _is_section(cur):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{where}{k} must be a table" + (f" in {source}" if source else ""))
            apply(cur, v, f"{where}{k}.", source)
        else:
            setattr(obj, k, _coerce(v, cur, f"{where}{k}", source))


def _coerce(v: Any, cur: Any, name: str, source: str) -> Any:
    try:
        if isinstance(cur, bool):
            if isinstance(v, str):
                low = v.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off", ""):
                    return False
                raise ValueError(f"not a boolean: {v!r}")
            return bool(v)
        if isinstance(cur, int):
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(f"not an integer: {v!r}")
            return int(v)
        if isinstance(cur, float):
            return float(v)
        if isinstance(cur, str):
            if isinstance(v, (dict, list)):
                raise ValueError(f"expected a string, got {type(v).__name__}")
            return str(v)
        if isinstance(cur, list):
            if isinstance(v, str):
                return [x.strip() for x in v.split(",") if x.strip()]
            if not isinstance(v, list):
                raise ValueError(f"expected a list, got {type(v).__name__}")
            return list(v)
        if isinstance(cur, dict):
            if isinstance(v, str):
                v = json.loads(v)
            if not isinstance(v, dict):
                raise ValueError(f"expected a table, got {type(v).__name__}")
            return dict(v)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{name}: {e}" + (f" (from {source})" if source else "")) from None
    return v


def load_file(path: str | Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


def _env_key(obj: Any, rest: str) -> tuple[str, ...] | None:
    """The option path an environment variable name (without the prefix, lower
    case) stands for, or None if it names no section or key of ``obj``."""
    fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if rest in fields and not _is_section(fields[rest]):
        return (rest,)
    # the longest section name first: "movers_x" is not section "mover" + "s_x"
    for name in sorted(fields, key=len, reverse=True):
        if _is_section(fields[name]) and rest.startswith(name + "_"):
            key = rest[len(name) + 1:].lstrip("_")
            sub = _env_key(fields[name], key)
            return (name, *sub) if sub else (name, key)
    return None


def apply_env(obj: Any, env: Mapping[str, str], section: str = "") -> None:
    """Apply ``OVAULT_<SECTION>_<KEY>`` variables to ``obj``. With ``section``
    (the mover: ``"mover"``), ``obj`` is that one section: ``OVAULT_MOVER_<KEY>``."""
    prefix = ENV_PREFIX + (section.upper() + "_" if section else "")
    for var in sorted(env):
        if not var.startswith(prefix):
            continue
        rest = var[len(prefix):].lower().lstrip("_")
        if section:
            path: tuple[str, ...] | None = _env_key(obj, rest) or (rest,)
        else:
            path = _env_key(obj, rest)
            if path is None:
                continue  # OVAULT_SERVER, OVAULT_LOG_LEVEL, ...: not this program's options
        data: Any = env[var]
        for part in reversed(path):
            data = {part: data}
        apply(obj, data, "", f"environment variable {var}")


def masked(obj: Any) -> dict:
    """The configuration as a dict, every secret replaced by ``********``."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if _is_section(v):
            out[f.name] = masked(v)
        elif is_secret(f.name) and v:
            out[f.name] = MASK
        else:
            out[f.name] = v
    return out


def _comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the class source (same line, else the lines above)."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = src.splitlines()
    out = {}
    for node in ast.parse(src).body[0].body:  # type: ignore[attr-defined]
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        line = lines[node.lineno - 1]
        code_end = node.end_col_offset if node.end_lineno == node.lineno else None
        tail = line[code_end:] if code_end is not None else ""
        text = tail.split("#", 1)[1].strip() if "#" in tail else ""
        if not text:
            above = []
            i = node.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip()[1:].strip())
                i -= 1
            text = " ".join(above)
        out[node.target.id] = text
    return out


def reference(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """(dotted key, default, comment) for every option of the dataclass instance ``obj``."""
    notes = _comments(type(obj))
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if _is_section(v):
            yield from reference(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", v, notes.get(f.name, "")


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v) if v else ("[]" if isinstance(v, list) else "{}")
    return repr(v)


def reference_table(obj: Any, prefix: str = "", env_section: str = "") -> str:
    """A markdown table of every option: key, environment variable, default, meaning."""
    rows = ["| key | environment | default | meaning |", "|---|---|---|---|"]
    for key, default, note in reference(obj, prefix):
        var = ENV_PREFIX + "_".join(p.upper() for p in ([env_section] if env_section else [])
                                     + key[len(prefix):].split("."))
        rows.append(f"| `{key}` | `{var}` | `{_show(default)}` | {note.replace('|', '/')} |")
    return "\n".join(rows)
