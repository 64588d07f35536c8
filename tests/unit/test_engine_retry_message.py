"""An engine call whose retries run out names the operation and the attempts."""
from __future__ import annotations

import ovirtsdk4 as sdk
import pytest

from orchestrator.config import Engine
from orchestrator.engine.client import EngineClient
from orchestrator.errors import EngineError, EngineUnavailable


async def test_exhausted_503_names_the_operation(monkeypatch):
    client = EngineClient(Engine(workers=1, retries=2))
    monkeypatch.setattr(client, "_conn", lambda: None)
    monkeypatch.setattr("asyncio.sleep", _no_sleep)
    calls = []

    def busy(_conn):
        calls.append(1)
        e = sdk.Error('Fault reason is "Operation Failed". Fault detail is "[Service Unavailable]". HTTP '
                      'response code is 503.')
        e.code = 503
        raise e
    try:
        with pytest.raises(EngineUnavailable) as ei:
            await client.call("snapshot.create", busy)
    finally:
        await client.close()
    assert len(calls) == 3
    msg = str(ei.value)
    assert msg == "engine: snapshot.create failed 3 times, last: [Service Unavailable] (HTTP 503)", msg
    # and said once: no phrase repeated
    assert msg.count("snapshot.create") == 1 and msg.count("engine") == 1


async def test_a_refusal_is_not_retried_and_keeps_the_engines_words(monkeypatch):
    client = EngineClient(Engine(workers=1, retries=2))
    monkeypatch.setattr(client, "_conn", lambda: None)

    def refuse(_conn):
        e = sdk.Error('Fault reason is "Operation Failed". Fault detail is "[Cannot remove VM. '
                      'VM is running.]". HTTP response code is 409.')
        e.code = 409
        raise e
    try:
        with pytest.raises(EngineError) as ei:
            await client.call("vm.remove", refuse)
    finally:
        await client.close()
    assert not isinstance(ei.value, EngineUnavailable)
    assert ei.value.http_status == 409 and "VM is running" in str(ei.value)


async def _no_sleep(*_a, **_k):
    return None
