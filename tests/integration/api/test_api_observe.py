"""Health, readiness, metrics, the OpenAPI document and the inventory routes
over HTTP, against the real catalog and store."""
from types import SimpleNamespace as NS

from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.catalog import NewMachine


async def test_readyz_checks_database_engine_and_target(api):
    """Open to anyone, so it says ready or not ready and nothing more: which
    dependency failed and why goes to the log only."""
    status, _, body = await api.call("GET", "/readyz", token=None)
    assert (status, body) == (200, {"status": "ready"})

    async def down():
        raise ConnectionError("engine.example: connection refused")
    api.engine.list_clusters = down
    status, _, body = await api.call("GET", "/readyz", token=None)
    assert (status, body) == (503, {"status": "not ready"})


async def test_metrics_are_read_from_the_catalog_at_scrape_time(api):
    for name in ("a", "b"):
        await api.catalog.jobs.create("backup", [NewMachine(f"vm-{name}", name)])
    viewer = await api.token("viewer")
    assert (await api.call("GET", "/api/v1/jobs", token=viewer))[0] == 200
    async with api.client.get("/metrics", headers={"Authorization": f"Bearer {viewer}"}) as r:
        text = await r.text()
        assert (r.status, r.content_type) == (200, "text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {(s.labels["kind"], s.labels["state"]): s.value for s in fams["ovault_jobs"].samples}
    assert jobs[("backup", "queued")] == 2 and jobs[("restore", "queued")] == 0
    # the request before was counted, under its route template
    reqs = {(s.labels["route"], s.labels["status"]): s.value for s in fams["ovault_http_requests"].samples
            if s.name == "ovault_http_requests_total"}
    assert reqs[("/api/v1/jobs", "200")] == 1


async def test_the_served_openapi_document_is_valid(api):
    status, _, doc = await api.call("GET", "/api/openapi.json", token=await api.token("viewer"))
    assert status == 200
    validate(doc)
    assert "/api/v1/jobs/{id}" in doc["paths"]


async def test_clusters_and_data_storage_domains_for_the_restore_wizard(api):
    api.engine.clusters = [NS(id="c1", name="Default"), NS(id="c2", name="Edge")]
    api.engine.storage_domains = [
        NS(id="sd1", name="data1", type=NS(value="data"), available=5 << 30, used=1 << 30),
        NS(id="sd2", name="iso", type=NS(value="iso"), available=1, used=1),
        NS(id="sd3", name="data2", type="data", available=None, used=None)]
    viewer = await api.token("viewer")
    _, _, clusters = await api.call("GET", "/api/v1/clusters", token=viewer)
    assert clusters == {"items": [{"id": "c1", "name": "Default"}, {"id": "c2", "name": "Edge"}], "next_cursor": None}
    _, _, sds = await api.call("GET", "/api/v1/storage-domains", token=viewer)
    assert sds["items"] == [
        {"id": "sd1", "name": "data1", "type": "data", "available_bytes": 5 << 30, "used_bytes": 1 << 30},
        {"id": "sd3", "name": "data2", "type": "data", "available_bytes": None, "used_bytes": None}]
