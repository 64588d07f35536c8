"""The engine's JSON representation, mapped generically from and to its XML.

The real engine renders JSON with Jackson over the same JAXB objects it
renders as XML, which gives these rules (reproduced here):
- a collection is an object with one key, the element name, holding an array:
  `{"vm": [ {...}, ... ]}`; an empty collection is `{}`;
- a single entity is the object itself (no root key); `id` and `href` are keys;
- scalars are strings (`"memory": "1073741824"`, `"stateless": "false"`), dates
  are numbers of milliseconds since the epoch;
- nested lists keep their XML wrapper: `"disk_attachments": {"disk_attachment": [...]}`,
  `"devices": {"device": ["hd"]}`; `link` is always an array of `{"href", "rel"}`;
- actions and faults are objects too: `{"status": "complete"}`, `{"reason", "detail"}`.

Request bodies in JSON are turned back into XML (with the root element the
route expects) and then read by the SDK's own readers, like XML bodies.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
ATTRIBUTES = ("id", "href", "rel")
# Wrappers whose items are not named after them (from the API model).
WRAPPERS = {"servers": "host", "search_domains": "host", "boot_devices": "device"}


def _plural_of(parent: str, child: str) -> bool:
    if WRAPPERS.get(parent) == child:
        return True
    return parent in (child + "s", child + "es") or (
        child.endswith("y") and parent == child[:-1] + "ies")


def _is_wrapper(el: ET.Element) -> bool:
    tags = {c.tag for c in el}
    return len(tags) == 1 and not el.attrib and _plural_of(el.tag, next(iter(tags)))


def _scalar(text: str | None):
    text = text or ""
    if _DATE.match(text):
        try:
            return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return text
    return text


def _value(el: ET.Element):
    if not len(el) and not el.attrib:
        return _scalar(el.text)
    if _is_wrapper(el):
        return {el[0].tag: [_value(c) for c in el]}
    return _object(el)


def _object(el: ET.Element) -> dict:
    out: dict = {}
    for k, v in el.attrib.items():
        out[k] = v
    groups: dict[str, list] = {}
    for c in el:
        groups.setdefault(c.tag, []).append(c)
    for tag, items in groups.items():
        if tag == "link" or len(items) > 1:
            out[tag] = [_value(c) for c in items]
        else:
            out[tag] = _value(items[0])
    return out


def xml_to_json(text: str, collection: bool = False) -> str:
    root = ET.fromstring(text)
    if collection:
        doc = {root[0].tag: [_value(c) for c in root]} if len(root) else {}
    else:
        doc = _object(root)
    return json.dumps(doc, indent=2)


def _build(tag: str, value, parent: ET.Element | None = None) -> ET.Element:
    el = ET.Element(tag) if parent is None else ET.SubElement(parent, tag)
    if isinstance(value, dict):
        for k, v in value.items():
            if v is None:
                continue
            if k in ATTRIBUTES and not isinstance(v, (dict, list)):
                el.set(k, _text(v))
            elif isinstance(v, list):
                for item in v:
                    _build(k, item, el)
            else:
                _build(k, v, el)
    elif isinstance(value, list):
        raise ValueError(f"unexpected array in '{tag}'")
    else:
        el.text = _text(value)
    return el


def _text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def json_to_xml(data: bytes, root: str) -> bytes:
    """XML for a JSON request body; raises ValueError on malformed JSON."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError("the JSON document must be an object")
    return ET.tostring(_build(root, doc), encoding="utf-8")
