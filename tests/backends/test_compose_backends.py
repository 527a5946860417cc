"""compose/docker-compose.jaeger-victorialogs.yml (Jaeger and VictoriaLogs in place of Tempo and
Loki) merged over compose/docker-compose.yml as Compose merges them: valid Compose, every host,
port and file agrees with the configs, and Grafana's data sources link metrics, traces and logs.
No Docker here: the files are checked against each other (the e2e test runs the same Jaeger
config and the same trace -> logs query against the real backends)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
BASE = COMPOSE_DIR / "docker-compose.yml"
OVERRIDE = COMPOSE_DIR / "docker-compose.jaeger-victorialogs.yml"
JAEGER_CONFIG = COMPOSE_DIR / "jaeger" / "jaeger.yaml"
DATASOURCES = COMPOSE_DIR / "grafana" / "jaeger-victorialogs" / "datasources" / "datasources.yaml"
SCHEMA = REPO / "tests" / "stack" / "testdata" / "compose-spec.json"
DS_TARGET = "/etc/grafana/provisioning/datasources"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _target(volume: str | dict[str, Any]) -> str:
    return str(volume["target"] if isinstance(volume, dict) else volume.split(":")[1])


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Compose's merge of an override file: mappings merge, `volumes` merge by mount target,
    `ports` / `expose` add up, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key == "volumes" and isinstance(base, list):
        by_target = {_target(v): v for v in base}
        by_target.update({_target(v): v for v in over})
        return list(by_target.values())
    if key in ("ports", "expose") and isinstance(base, list):
        return base + [p for p in over if p not in base]
    return copy.deepcopy(over)


@pytest.fixture(scope="module")
def merged() -> dict[str, Any]:
    doc: dict[str, Any] = merge(_load(BASE), _load(OVERRIDE))
    return doc


@pytest.fixture(scope="module")
def active(merged: dict[str, Any]) -> dict[str, Any]:
    """The services `up` starts (no profile)."""
    return {n: s for n, s in merged["services"].items() if not s.get("profiles")}


@pytest.fixture(scope="module")
def jaeger_cfg() -> dict[str, Any]:
    cfg: dict[str, Any] = _load(JAEGER_CONFIG)
    return cfg


@pytest.fixture(scope="module")
def datasources() -> list[dict[str, Any]]:
    ds: list[dict[str, Any]] = _load(DATASOURCES)["datasources"]
    return ds


def default_of(value: str) -> str:
    """'${env:X:-0.0.0.0:4317}' -> '0.0.0.0:4317'."""
    m = re.fullmatch(r"\$\{env:\w+:-(.+)\}", str(value))
    assert m, f"not an env var with a default: {value}"
    return m.group(1)


def port(hostport: str) -> int:
    if "//" in hostport:
        p = urlsplit(hostport).port
        assert p is not None, hostport
        return p
    return int(hostport.rsplit(":", 1)[1])


def host(hostport: str) -> str:
    return (urlsplit(hostport).hostname or "") if "//" in hostport else hostport.rsplit(":", 1)[0]


def jaeger_ports(cfg: dict[str, Any]) -> dict[str, int]:
    ext, otlp = cfg["extensions"], cfg["receivers"]["otlp"]["protocols"]
    return {
        "otlp_grpc": port(default_of(otlp["grpc"]["endpoint"])),
        "otlp_http": port(default_of(otlp["http"]["endpoint"])),
        "query": port(default_of(ext["jaeger_query"]["http"]["endpoint"])),
        "health": port(default_of(ext["healthcheckv2"]["http"]["endpoint"])),
    }


def victorialogs_port(svc: dict[str, Any]) -> int:
    [flag] = [a for a in svc["command"] if a.startswith("-httpListenAddr=")]
    return int(flag.rsplit(":", 1)[1])


# ------------------------------------------------------------------------------ compose files


def test_merged_file_validates_against_compose_spec(merged: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(merged), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_jaeger_and_victorialogs_replace_tempo_and_loki(active: dict[str, Any]) -> None:
    assert {"jaeger", "victorialogs", "collector", "sidecar", "prometheus", "grafana"} <= set(
        active
    )
    assert "tempo" not in active and "loki" not in active
    for name in ("jaeger", "victorialogs"):
        image = active[name]["image"]
        assert re.search(r":v?\d+\.\d+\.\d+$", image), image  # pinned


def test_dependencies_are_running_or_optional(active: dict[str, Any]) -> None:
    for name, svc in active.items():
        for dep, spec in svc.get("depends_on", {}).items():
            if dep not in active:
                assert spec.get("required") is False, f"{name} requires disabled {dep}"
            elif "healthcheck" in active[dep]:
                assert spec["condition"] == "service_healthy", (name, dep)
    for name in ("collector", "grafana"):
        deps = active[name]["depends_on"]
        assert deps["jaeger"].get("required", True) and deps["victorialogs"].get("required", True)


def test_healthchecks_probe_the_listening_ports(
    active: dict[str, Any], jaeger_cfg: dict[str, Any]
) -> None:
    want = {
        "jaeger": jaeger_ports(jaeger_cfg)["health"],
        "victorialogs": victorialogs_port(active["victorialogs"]),
    }
    for name, p in want.items():
        svc = active[name]
        text = " ".join(svc["healthcheck"]["test"])
        assert {int(u) for u in re.findall(r"http://127\.0\.0\.1:(\d+)/", text)} == {p}, text
        assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert any(
            isinstance(v, dict) and v["source"] == "probe" and v["read_only"]
            for v in svc["volumes"]
        )


def test_jaeger_config_is_mounted_and_listens_where_compose_says(
    active: dict[str, Any], jaeger_cfg: dict[str, Any]
) -> None:
    j = active["jaeger"]
    [mount] = [v for v in j["volumes"] if isinstance(v, str) and v.endswith(":ro")]
    src, target, _ = mount.split(":")
    assert (COMPOSE_DIR / src).resolve() == JAEGER_CONFIG.resolve()
    assert j["command"] == [f"--config={target}"]
    ports = jaeger_ports(jaeger_cfg)
    assert f"{ports['query']}:{ports['query']}" in j["ports"]
    assert str(ports["otlp_grpc"]) in j["expose"]
    q = jaeger_cfg["extensions"]["jaeger_query"]
    assert q["enable_tracing"] is False  # else it traces itself to localhost:4317
    used = set(jaeger_cfg["service"]["extensions"])
    assert {"jaeger_storage", "jaeger_query", "healthcheckv2"} == used


def test_every_jaeger_listener_is_an_env_var(jaeger_cfg: dict[str, Any]) -> None:
    """The tests bind each one to 127.0.0.1: none may be left to a default that listens on all
    interfaces."""
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("endpoint", "host"):
                    found.append(f"{path}.{k}")
                    assert str(v).startswith("${env:"), f"{path}.{k}: {v}"
                walk(v, f"{path}.{k}")

    walk(jaeger_cfg, "")
    listeners = {".extensions.jaeger_query.http", ".extensions.jaeger_query.grpc"}
    listeners |= {".extensions.healthcheckv2.http", ".receivers.otlp.protocols.grpc"}
    listeners |= {".receivers.otlp.protocols.http"}
    assert {f"{p}.endpoint" for p in listeners} <= set(found)


def test_collector_sends_to_jaeger_and_victorialogs(
    active: dict[str, Any], jaeger_cfg: dict[str, Any]
) -> None:
    env = active["collector"]["environment"]
    tempo = env["TEMPO_ENDPOINT"]
    assert host(tempo) == "jaeger" and port(tempo) == jaeger_ports(jaeger_cfg)["otlp_grpc"]
    loki = env["LOKI_ENDPOINT"]
    assert host(loki) == "victorialogs"
    assert port(loki) == victorialogs_port(active["victorialogs"])
    # the otlp_http exporter appends /v1/logs: VictoriaLogs' OTLP path
    assert urlsplit(loki).path + "/v1/logs" == "/insert/opentelemetry/v1/logs"


def test_named_volumes_declared_and_used(merged: dict[str, Any], active: dict[str, Any]) -> None:
    used = {
        (v["source"] if isinstance(v, dict) else v.split(":")[0])
        for s in active.values()
        for v in s.get("volumes", [])
    }
    assert "victorialogs-data" in used and "victorialogs-data" in merged["volumes"]


# ------------------------------------------------------------------------------------- Grafana


def test_grafana_mounts_these_datasources_and_the_plugin(active: dict[str, Any]) -> None:
    g = active["grafana"]
    [mount] = [v for v in g["volumes"] if _target(v) == DS_TARGET]
    assert isinstance(mount, str) and mount.endswith(":ro")
    assert (COMPOSE_DIR / mount.split(":")[0]).resolve() == DATASOURCES.parent.resolve()
    plugins = g["environment"]["GF_PLUGINS_PREINSTALL"].split(",")
    assert "victoriametrics-logs-datasource" in plugins


def test_datasource_uids_and_urls(
    datasources: list[dict[str, Any]], active: dict[str, Any], jaeger_cfg: dict[str, Any]
) -> None:
    uids = [d["uid"] for d in datasources]
    assert sorted(uids) == ["alertmanager", "jaeger", "prometheus", "victorialogs"]
    assert [d["uid"] for d in datasources if d.get("isDefault")] == ["prometheus"]
    listening = {
        "jaeger": jaeger_ports(jaeger_cfg)["query"],
        "victorialogs": victorialogs_port(active["victorialogs"]),
        "prometheus": 9090,
        "alertmanager": 9093,
    }
    types = {}
    for d in datasources:
        h = host(d["url"])
        assert h in active, d["url"]
        assert port(d["url"]) == listening[h], d["url"]
        types[d["uid"]] = d["type"]
    assert types["jaeger"] == "jaeger"
    assert types["victorialogs"] == "victoriametrics-logs-datasource"


def test_metrics_traces_logs_links(datasources: list[dict[str, Any]]) -> None:
    by = {d["uid"]: d["jsonData"] for d in datasources}
    [ex] = by["prometheus"]["exemplarTraceIdDestinations"]
    assert ex["name"] == "trace_id" and ex["datasourceUid"] == "jaeger"  # the sidecar's label
    t2l = by["jaeger"]["tracesToLogsV2"]
    assert t2l["datasourceUid"] == "victorialogs" and t2l["customQuery"] is True
    assert t2l["query"] == 'trace_id:="$${__trace.traceId}"'
    t2m = by["jaeger"]["tracesToMetrics"]
    assert t2m["datasourceUid"] == "prometheus" and t2m["queries"]
    for q in t2m["queries"]:
        assert "{$$__tags" in q["query"] and "gen_ai_" in q["query"]
    assert {t["value"] for t in t2m["tags"]} == {"service_name", "gen_ai_request_model"}
    [field] = by["victorialogs"]["derivedFields"]
    assert field["datasourceUid"] == "jaeger" and field["url"] == "$${__value.raw}"
    assert field["matcherType"] == "label" and field["matcherRegex"] == "trace_id"


def test_dollars_are_escaped() -> None:
    """Grafana expands ${VAR} from its environment in provisioning files: template variables
    must be written $${...} (and $$__tags)."""
    text = "\n".join(
        line for line in DATASOURCES.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    assert "$${" in text
    assert not re.search(r"(?<!\$)\$\{", text)
    assert not re.search(r"(?<!\$)\$__", text)


def test_backend_exporters_have_persistent_queues() -> None:
    """A Jaeger / VictoriaLogs outage (or a Collector restart during one) loses nothing the
    sidecar handed over: the exporters queue on disk and retry without a deadline
    (tests/backends/test_backends_e2e.py stops Jaeger for 30 s)."""
    cfg = _load(REPO / "collector" / "config.yaml")
    for name in ("otlp_grpc/tempo", "otlp_http/loki"):
        exp = cfg["exporters"][name]
        assert exp["sending_queue"]["enabled"] is True, name
        assert exp["sending_queue"]["storage"] == "file_storage", name
        assert exp["retry_on_failure"]["enabled"] is True, name
        assert exp["retry_on_failure"]["max_elapsed_time"] == "0s", name
    assert "file_storage" in cfg["service"]["extensions"]
