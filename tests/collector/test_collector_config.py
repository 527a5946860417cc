"""The otelcol-llm distribution against collector/config.yaml and collector/loadbalancing.yaml.

Everything runs the real binary (built by scripts/build-collector.sh) on loopback: the config is
validated, its components are checked against the binary's, and the Collector is started with
the real config (ports and endpoints from env) in front of OTLP sinks that stand in for the
sidecar, Tempo, Loki and Prometheus; data is sent with the OpenTelemetry SDK's own exporters.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.collector._helpers import (
    BUILDER_CONFIG,
    CONFIG,
    LOADBALANCING_CONFIG,
    REMOTE_WRITE_CONFIG,
    Collector,
    CollectorPorts,
    Sinks,
    collector_env,
    send_counter,
    send_log,
    send_spans,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
# Component types a config may use that this build cannot have: their Go modules are not on the
# module proxy this project builds from (see collector/builder-config.yaml).
NOT_IN_BUILD = {"exporters": {"load_balancing"}}

LLM_SPANS = [
    (
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 34,
        },
    ),
    (
        "embeddings text-embedding-3-small",
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 7,
        },
    ),
    (
        "tool get_weather",
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "server.port": 443,
            "llm.cache_hit": True,
            "llm.temperature": 0.25,
        },
    ),
]


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def used_types(cfg: dict[str, Any]) -> dict[str, set[str]]:
    """Component types per kind: the ones defined and the ones the service references."""
    used: dict[str, set[str]] = {k: {cid.split("/")[0] for cid in cfg.get(k) or {}} for k in KINDS}
    service = cfg.get("service") or {}
    used["extensions"] |= {e.split("/")[0] for e in service.get("extensions") or []}
    for pipeline in (service.get("pipelines") or {}).values():
        for key in ("receivers", "processors", "exporters"):
            for cid in pipeline.get(key) or []:
                t = cid.split("/")[0]
                # a connector is listed as an exporter of one pipeline and a receiver of another
                kind = "connectors" if t in used["connectors"] else key
                used[kind].add(t)
    return used


def validate(
    binary: Path, configs: list[Path], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    args = [str(binary), "validate"]
    for c in configs:
        args += ["--config", str(c)]
    return subprocess.run(
        args,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def components(otelcol_binary: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(otelcol_binary), "components"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    data = yaml.safe_load(out)
    assert isinstance(data, dict)
    return data


def available(components: dict[str, Any]) -> dict[str, set[str]]:
    return {k: {c["name"] for c in components.get(k) or []} for k in KINDS}


# ------------------------------------------------------------------------ static: the binary


def test_binary_is_built_from_the_manifest(components: dict[str, Any]) -> None:
    """Every module (component and confmap provider) the binary reports is one the manifest pins,
    at the pinned version, and nothing else."""
    manifest = yaml.safe_load(BUILDER_CONFIG.read_text())
    wanted = {e["gomod"] for k in (*KINDS, "providers") for e in manifest.get(k) or []}
    got = {c["module"] for k in (*KINDS, "providers") for c in components.get(k) or []}
    assert got == wanted
    # signaltometrics is one release behind: its v0.162.0 needs OTTL packages the proxy lacks
    behind = {m for m in wanted if "/signaltometricsconnector " in m}
    assert {m.rsplit(" ", 1)[1] for m in behind} == {"v0.161.0"}
    versions = {m.rsplit(" ", 1)[1] for m in wanted - behind}
    assert versions == {"v0.162.0", "v1.68.0"}, "one release line for core and contrib"
    assert components["buildinfo"]["command"] == "otelcol-llm"


def test_distribution_has_the_components_the_project_needs(components: dict[str, Any]) -> None:
    have = available(components)
    assert {"otlp"} <= have["receivers"]
    assert {"memory_limiter", "batch"} <= have["processors"]
    assert {"otlp_grpc", "otlp_http", "debug", "file", "prometheus_remote_write"} <= have[
        "exporters"
    ]
    assert {"file_storage", "health_check"} <= have["extensions"]
    # the benchmark's Collector-side baseline
    assert {"span_metrics", "signal_to_metrics"} <= have["connectors"]


def test_config_uses_only_components_of_the_build(components: dict[str, Any]) -> None:
    used, have = used_types(load(CONFIG)), available(components)
    missing = {k: used[k] - have[k] for k in KINDS if used[k] - have[k]}
    assert missing == {}
    # and the config really uses what the data path needs (guards against a vacuous parse)
    assert used["exporters"] == {"otlp_grpc", "otlp_http"}
    assert used["extensions"] == {"health_check", "file_storage"}


def test_loadbalancing_config_misses_only_what_the_proxy_lacks(components: dict[str, Any]) -> None:
    used, have = used_types(load(LOADBALANCING_CONFIG)), available(components)
    assert "load_balancing" in used["exporters"]
    missing = {k: used[k] - have[k] for k in KINDS if used[k] - have[k]}
    for kind, types in missing.items():
        assert types <= NOT_IN_BUILD.get(kind, set()), f"{kind}: {types} not in the build"


# ------------------------------------------------------------------------ static: the configs


def test_pipelines_start_with_memory_limiter_then_batch() -> None:
    for path in (CONFIG, LOADBALANCING_CONFIG):
        pipelines = load(path)["service"]["pipelines"]
        assert set(pipelines) == {"traces/in", "logs/in", "metrics", "traces/out", "logs/out"}
        for name, p in pipelines.items():
            assert p["processors"][:2] == ["memory_limiter", "batch"], (path.name, name)


def test_sidecar_exporter_has_a_persistent_queue_and_unbounded_retry() -> None:
    cfg = load(CONFIG)
    side = cfg["exporters"]["otlp_grpc/sidecar"]
    assert side["sending_queue"]["enabled"] is True
    assert side["sending_queue"]["storage"] == "file_storage"
    assert "file_storage" in cfg["service"]["extensions"]
    assert side["retry_on_failure"]["enabled"] is True
    assert side["retry_on_failure"]["max_elapsed_time"] == "0s"
    assert side["compression"] == "none"  # a local hop: gzip would cost CPU on both ends
    for p in ("traces/in", "logs/in"):
        assert cfg["service"]["pipelines"][p]["exporters"] == ["otlp_grpc/sidecar"]


def test_loadbalancing_variant_differs_only_in_the_sidecar_exporter() -> None:
    base, lb = load(CONFIG), load(LOADBALANCING_CONFIG)
    exp = lb["exporters"]["load_balancing"]
    assert exp["routing_key"] == "traceID"
    assert exp["sending_queue"]["storage"] == "file_storage"
    assert exp["resolver"]["static"]["hostnames"].startswith("${env:SIDECAR_ENDPOINTS:-[")
    assert "otlp" in exp["protocol"] and "endpoint" not in exp["protocol"]["otlp"]
    # replace the load balancer by the single-sidecar exporter: the rest must be identical
    lb = copy.deepcopy(lb)
    del lb["exporters"]["load_balancing"]
    lb["exporters"]["otlp_grpc/sidecar"] = base["exporters"]["otlp_grpc/sidecar"]
    for p in lb["service"]["pipelines"].values():
        p["exporters"] = [
            "otlp_grpc/sidecar" if e == "load_balancing" else e for e in p["exporters"]
        ]
    assert lb == base


# ---------------------------------------------------------------------------- validate


def test_validate_config_with_test_env(otelcol_binary: Path, tmp_path: Path) -> None:
    env = collector_env(tmp_path / "storage", CollectorPorts())
    r = validate(otelcol_binary, [CONFIG], env)
    assert r.returncode == 0, r.stderr


def test_validate_config_with_compose_defaults(otelcol_binary: Path) -> None:
    """No env at all: every ${env:X:-default} falls back to the compose value."""
    r = validate(otelcol_binary, [CONFIG], {})
    assert r.returncode == 0, r.stderr


def test_validate_remote_write_config(otelcol_binary: Path, components: dict[str, Any]) -> None:
    """collector/remote-write.yaml (metrics.push -> remote write): compose defaults valid, only
    components of the build, the metrics pipeline ends in prometheus_remote_write."""
    cfg = load(REMOTE_WRITE_CONFIG)
    used, have = used_types(cfg), available(components)
    assert {k: used[k] - have[k] for k in KINDS if used[k] - have[k]} == {}
    assert cfg["service"]["pipelines"]["metrics"]["exporters"] == ["prometheus_remote_write"]
    r = validate(otelcol_binary, [REMOTE_WRITE_CONFIG], {})
    assert r.returncode == 0, r.stderr
    bad = validate(otelcol_binary, [REMOTE_WRITE_CONFIG], {"COLLECTOR_MEMORY_LIMIT_MIB": "x"})
    assert bad.returncode != 0


def test_validate_rejects_bad_env_values(otelcol_binary: Path, tmp_path: Path) -> None:
    """The env-driven fields are really checked (validate is not a no-op on this config)."""
    env = collector_env(tmp_path / "s", CollectorPorts(), SIDECAR_QUEUE_SIZE="0")
    r = validate(otelcol_binary, [CONFIG], env)
    assert r.returncode != 0
    assert "otlp_grpc/sidecar" in r.stderr and "queue" in r.stderr.lower()


def test_validate_loadbalancing_config(
    otelcol_binary: Path, components: dict[str, Any], tmp_path: Path
) -> None:
    if "load_balancing" not in available(components)["exporters"]:
        pytest.skip("loadbalancingexporter is not in this build (module not on the module proxy)")
    env = collector_env(
        tmp_path / "storage", CollectorPorts(), SIDECAR_ENDPOINTS="[127.0.0.1:1,127.0.0.1:2]"
    )
    r = validate(otelcol_binary, [LOADBALANCING_CONFIG], env)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------ running Collector


def start(
    binary: Path, tmp_path: Path, ports: CollectorPorts, storage: Path, **endpoints: str
) -> Collector:
    env = collector_env(storage, ports, **endpoints)
    return Collector(binary, [CONFIG], env, tmp_path / "collector.log").start()


def test_app_traffic_reaches_sidecar_and_prometheus(
    otelcol_binary: Path, tmp_path: Path, sinks: Sinks
) -> None:
    ports = CollectorPorts()
    with start(otelcol_binary, tmp_path, ports, tmp_path / "storage", **sinks.env()) as col:
        trace_ids = send_spans(f"127.0.0.1:{ports.otlp_grpc}", LLM_SPANS, service="llm-app")
        send_log(
            f"http://127.0.0.1:{ports.otlp_http}/v1/logs",
            "prompt sent",
            {"gen_ai.request.model": "gpt-4o"},
            service="llm-app",
        )
        send_counter(f"127.0.0.1:{ports.otlp_grpc}", "app.requests", 3, {"route": "/chat"})

        assert sinks.sidecar.wait_spans(lambda s: len(s) >= len(LLM_SPANS), 15)
        assert wait_until(lambda: sinks.sidecar.log_records(), 10)
        assert wait_until(lambda: "app.requests" in sinks.prometheus.metric_names(), 10)

        spans = {s.name: s for s in sinks.sidecar.spans()}
        assert len(sinks.sidecar.spans()) == len(LLM_SPANS)
        for name, attributes in LLM_SPANS:
            assert spans[name].attributes == attributes  # names, values and types intact
            assert spans[name].resource["service.name"] == "llm-app"
        assert sorted(s.trace_id for s in spans.values()) == sorted(trace_ids)

        (log,) = sinks.sidecar.log_records()
        assert log.body == "prompt sent"
        assert log.attributes["gen_ai.request.model"] == "gpt-4o"
        assert log.resource["service.name"] == "llm-app"

        assert set(sinks.prometheus.paths) == {"/api/v1/otlp/v1/metrics"}
        # the in-path goes to the sidecar only, never straight to the backends
        assert sinks.tempo.spans() == [] and sinks.loki.log_records() == []
        assert sinks.sidecar.metric_names() == set()

        # the Collector's own telemetry on the metrics port counts what reached the sidecar
        assert wait_until(
            lambda: (
                col.metric("otelcol_exporter_sent_spans", exporter="otlp_grpc/sidecar")
                == len(LLM_SPANS)
            ),
            5,
        )
        assert col.metric("otelcol_exporter_sent_log_records", exporter="otlp_grpc/sidecar") == 1
        assert col.healthy()


def test_enriched_output_reaches_tempo_and_loki(
    otelcol_binary: Path, tmp_path: Path, sinks: Sinks
) -> None:
    ports = CollectorPorts()
    with start(otelcol_binary, tmp_path, ports, tmp_path / "storage", **sinks.env()):
        enriched = [
            ("chat gpt-4o", {"gen_ai.usage.cost_usd": 0.000375, "gen_ai.usage.input_tokens": 12})
        ]
        send_spans(f"127.0.0.1:{ports.enriched_grpc}", enriched, service="llm-app")
        send_log(
            f"http://127.0.0.1:{ports.enriched_http}/v1/logs",
            "llm call",
            {"gen_ai.usage.cost_usd": 0.000375},
        )

        assert sinks.tempo.wait_spans(lambda s: len(s) == 1, 15)
        assert wait_until(lambda: sinks.loki.log_records(), 10)
        (span,) = sinks.tempo.spans()
        assert (span.name, span.attributes) == enriched[0]
        (log,) = sinks.loki.log_records()
        assert log.body == "llm call" and log.attributes["gen_ai.usage.cost_usd"] == 0.000375
        assert set(sinks.loki.paths) == {"/otlp/v1/logs"}
        # enriched data must not loop back into the sidecar
        assert sinks.sidecar.spans() == [] and sinks.sidecar.log_records() == []


def test_sidecar_outage_loses_nothing(otelcol_binary: Path, tmp_path: Path, sinks: Sinks) -> None:
    ports = CollectorPorts()
    with start(otelcol_binary, tmp_path, ports, tmp_path / "storage", **sinks.env()) as col:
        app = f"127.0.0.1:{ports.otlp_grpc}"
        before = [(f"before-{i}", {"i": i}) for i in range(5)]
        during = [(f"during-{i}", {"i": i}) for i in range(20)]
        send_spans(app, before)
        assert sinks.sidecar.wait_spans(lambda s: len(s) == 5, 15)

        sinks.sidecar.stop()  # the sidecar restarts ...
        send_spans(app, during)  # ... while the app keeps sending: the Collector accepts
        assert wait_until(
            lambda: (
                (col.metric("otelcol_exporter_queue_size", exporter="otlp_grpc/sidecar") or 0) >= 1
            ),
            10,
        )
        assert not any(s.name.startswith("during") for s in sinks.sidecar.spans())

        sinks.sidecar.start()  # same port
        names = {n for n, _ in before + during}
        assert sinks.sidecar.wait_spans(lambda s: {x.name for x in s} == names, 20), sorted(
            names - {x.name for x in sinks.sidecar.spans()}
        )
        assert len(sinks.sidecar.spans()) == len(names)
        got = {s.name: s.attributes for s in sinks.sidecar.spans()}
        assert all(got[n] == a for n, a in before + during)


def test_queue_survives_collector_restart(
    otelcol_binary: Path, tmp_path: Path, sinks: Sinks
) -> None:
    ports, storage = CollectorPorts(), tmp_path / "storage"
    sinks.sidecar.stop()
    names = {f"queued-{i}" for i in range(10)}
    with start(otelcol_binary, tmp_path, ports, storage, **sinks.env()) as col:
        send_spans(f"127.0.0.1:{ports.otlp_grpc}", [(n, {"n": n}) for n in sorted(names)])
        assert wait_until(
            lambda: (
                (col.metric("otelcol_exporter_queue_size", exporter="otlp_grpc/sidecar") or 0) >= 1
            ),
            10,
        )
        rc = col.stop()
    assert rc == 0
    assert sinks.sidecar.spans() == []

    sinks.sidecar.start()
    # a new Collector process: the app sends nothing more, so all data comes from the disk queue
    with start(otelcol_binary, tmp_path, CollectorPorts(), storage, **sinks.env()):
        assert sinks.sidecar.wait_spans(lambda s: {x.name for x in s} == names, 20), sorted(
            names - {x.name for x in sinks.sidecar.spans()}
        )
    assert {s.name: s.attributes["n"] for s in sinks.sidecar.spans()} == {n: n for n in names}
    assert (storage / "exporter_otlp_grpc_sidecar_traces").stat().st_size > 0
