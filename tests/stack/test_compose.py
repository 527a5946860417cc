"""compose/docker-compose.yml: valid Compose, and every host, port and file it names agrees with
the configs of the services it runs (Collector, sidecar, Prometheus, Tempo, Loki, Grafana,
Alertmanager). No Docker here: the files are checked against each other."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "testdata" / "compose-spec.json"
COLLECTOR_CONFIG = REPO / "collector" / "config.yaml"

# One-shot services: they run to completion, so they have no healthcheck; dependants wait
# for service_completed_successfully.
ONE_SHOT = {"init"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = _load(COMPOSE_FILE)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    svcs: dict[str, Any] = compose["services"]
    return svcs


def mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    """Volumes of a service in long form: type, source, target, read_only."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append(
                {
                    "type": v["type"],
                    "source": v["source"],
                    "target": v["target"],
                    "read_only": bool(v.get("read_only")),
                }
            )
            continue
        parts = v.split(":")
        source, target = parts[0], parts[1]
        mode = parts[2] if len(parts) > 2 else ""
        kind = "bind" if source.startswith((".", "/")) else "volume"
        out.append(
            {"type": kind, "source": source, "target": target, "read_only": "ro" in mode.split(",")}
        )
    return out


def mount_for(svc: dict[str, Any], target: str) -> dict[str, Any]:
    for m in mounts(svc):
        if m["target"] == target:
            return m
    raise AssertionError(f"nothing mounted at {target}: {mounts(svc)}")


def bind_source(m: dict[str, Any]) -> Path:
    return (COMPOSE_DIR / str(m["source"])).resolve()


def port_of(hostport: str) -> int:
    """'sidecar:4317', '0.0.0.0:4317', 'http://loki:3100/otlp' -> the port."""
    if "//" in hostport:
        port = urlsplit(hostport).port
        assert port is not None, hostport
        return port
    return int(hostport.rsplit(":", 1)[1])


def host_of(hostport: str) -> str:
    if "//" in hostport:
        host = urlsplit(hostport).hostname
        assert host is not None, hostport
        return host
    return hostport.rsplit(":", 1)[0]


def container_ports(svc: dict[str, Any]) -> set[int]:
    """Ports a service publishes or exposes (container side)."""
    out = set()
    for p in svc.get("ports", []):
        out.add(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    for p in svc.get("expose", []):
        out.add(int(str(p).split("/")[0]))
    return out


# --- the file itself ---------------------------------------------------------------------------
def test_compose_file_validates_against_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_compose_file(compose: dict[str, Any]) -> None:
    """The vendored schema really checks services (guards against an empty or lax schema)."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["sidecar"]["healthcheck"]["interval"] = 10  # must be a duration string
    broken["services"]["collector"]["depends_on"]["tempo"]["condition"] = "service_up"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_all_services_present(services: dict[str, Any]) -> None:
    assert {
        "collector",
        "sidecar",
        "prometheus",
        "tempo",
        "loki",
        "grafana",
        "alertmanager",
        "demo",
    } <= set(services)
    assert services["demo"]["profiles"] == ["demo"]
    assert all("profiles" not in s for n, s in services.items() if n != "demo")


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" not in svc:
            assert re.fullmatch(r"v?\d+(\.\d+){1,2}(-[a-z0-9.]+)?", tag), f"{name}: {image}"


def test_prometheus_is_v3_with_required_flags(services: dict[str, Any]) -> None:
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:v3.")
    for flag in (
        "--enable-feature=exemplar-storage",
        "--web.enable-otlp-receiver",
        "--web.enable-remote-write-receiver",
    ):
        assert flag in prom["command"]
    assert services["loki"]["image"].startswith("grafana/loki:3.")


def test_healthchecks_everywhere(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no"
            continue
        hc = svc.get("healthcheck")
        assert hc and hc.get("test") and not hc.get("disable"), f"{name}: no healthcheck"
        test = hc["test"]
        assert test[0] in ("CMD", "CMD-SHELL"), name
        if test[1] == "/probe/busybox":
            # Images without a shell or wget run the probe binary from the `probe` volume.
            assert mount_for(svc, "/probe")["read_only"], name
            assert mount_for(svc, "/probe")["source"] == "probe"


def test_probe_volume_is_filled_by_init(services: dict[str, Any]) -> None:
    init = services["init"]
    assert mount_for(init, "/probe")["source"] == "probe"
    assert "/probe/busybox" in " ".join(init["command"])
    assert init["image"].endswith("-musl"), "the probe must be a static busybox"
    for name, svc in services.items():
        if any(m["target"] == "/probe" for m in mounts(svc)) and name != "init":
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_healthchecks_probe_the_ports_the_services_listen_on(services: dict[str, Any]) -> None:
    expected = {
        "collector": _collector_default("health_check", 13133),
        "prometheus": 9090,
        "alertmanager": 9093,
        "tempo": _load(COMPOSE_DIR / "tempo" / "tempo.yaml")["server"]["http_listen_port"],
        "loki": _load(COMPOSE_DIR / "loki" / "loki.yaml")["server"]["http_listen_port"],
        "grafana": 3000,
        "sidecar": port_of(_load(COMPOSE_DIR / "sidecar" / "config.yaml")["metrics"]["endpoint"]),
    }
    for name, port in expected.items():
        text = " ".join(services[name]["healthcheck"]["test"])
        urls = re.findall(r"https?://127\.0\.0\.1:(\d+)/", text)
        assert urls and {int(u) for u in urls} == {port}, f"{name}: {text}"


def test_depends_on_conditions(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            cond = spec["condition"]
            if dep in ONE_SHOT:
                assert cond == "service_completed_successfully", (name, dep)
            else:
                assert cond == "service_healthy", (name, dep)
                assert "healthcheck" in services[dep], (name, dep)
    assert {"collector", "sidecar"} <= set(services["demo"]["depends_on"])
    assert {"prometheus", "tempo", "loki"} <= set(services["grafana"]["depends_on"])


def test_named_volumes_declared_and_used(compose: dict[str, Any], services: dict[str, Any]) -> None:
    used = {m["source"] for s in services.values() for m in mounts(s) if m["type"] == "volume"}
    assert used == set(compose["volumes"])


def test_bind_mounted_files_exist_and_configs_are_read_only(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for m in mounts(svc):
            if m["type"] != "bind":
                continue
            src = bind_source(m)
            if src == COLLECTOR_CONFIG.resolve() and not src.exists():
                continue  # reported by test_collector_config_exists
            assert src.exists(), f"{name}: {m['source']} does not exist"
            assert m["read_only"], f"{name}: config {m['source']} is not mounted :ro"


# --- Collector -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collector_cfg() -> dict[str, Any]:
    if not COLLECTOR_CONFIG.exists():
        pytest.skip("collector/config.yaml is not written yet (another engineer's file)")
    cfg: dict[str, Any] = _load(COLLECTOR_CONFIG)
    return cfg


_ENV = re.compile(r"\$\{env:(\w+)(?::-([^}]*))?\}")


def _env_default(value: str) -> tuple[str | None, str]:
    """'${env:X:-sidecar:4317}' -> ('X', 'sidecar:4317'); plain values -> (None, value)."""
    m = _ENV.fullmatch(str(value).strip())
    if not m:
        return None, str(value)
    return m.group(1), m.group(2) or ""


def _collector_default(component: str, fallback: int) -> int:
    if not COLLECTOR_CONFIG.exists():
        return fallback
    cfg = _load(COLLECTOR_CONFIG)
    return port_of(_env_default(cfg["extensions"][component]["endpoint"])[1])


def _resolve(value: str, env: dict[str, str]) -> str:
    var, default = _env_default(value)
    if var is None:
        return value
    return env.get(var, default)


def _component(cfg: dict[str, Any], kind: str, prefix: str, pipeline_hint: str) -> list[str]:
    return [
        k
        for k in cfg[kind]
        if k.split("/")[0] in prefix.split("|") and (pipeline_hint in k or pipeline_hint == "")
    ]


def test_collector_config_exists() -> None:
    if not COLLECTOR_CONFIG.exists():
        pytest.skip("collector/config.yaml is not written yet (another engineer's file)")
    assert COLLECTOR_CONFIG.stat().st_size > 0


def test_collector_mount_and_command(services: dict[str, Any]) -> None:
    col = services["collector"]
    m = mount_for(col, "/etc/otelcol-contrib/config.yaml")
    assert bind_source(m) == COLLECTOR_CONFIG.resolve() and m["read_only"]
    assert "--config=/etc/otelcol-contrib/config.yaml" in col["command"]
    assert col["image"].startswith("otel/opentelemetry-collector-contrib:")


def test_collector_environment_matches_the_stack(services: dict[str, Any]) -> None:
    env = services["collector"]["environment"]
    assert env == {
        "SIDECAR_ENDPOINT": "sidecar:4317",
        "TEMPO_ENDPOINT": "tempo:4317",
        "LOKI_ENDPOINT": "http://loki:3100/otlp",
        "PROMETHEUS_OTLP_ENDPOINT": "http://prometheus:9090/api/v1/otlp",
        "COLLECTOR_STORAGE_DIR": "/var/lib/otelcol/file_storage",
    }
    storage = mount_for(services["collector"], env["COLLECTOR_STORAGE_DIR"])
    assert storage["type"] == "volume" and not storage["read_only"]
    assert "chown -R 10001:10001 /otelcol" in " ".join(services["init"]["command"])
    assert mount_for(services["init"], "/otelcol")["source"] == storage["source"]


def test_collector_config_uses_the_compose_environment(
    collector_cfg: dict[str, Any], services: dict[str, Any]
) -> None:
    env = services["collector"]["environment"]
    text = COLLECTOR_CONFIG.read_text()
    used = {m.group(1) for m in _ENV.finditer(text)}
    assert set(env) <= used, f"compose sets env the Collector config never reads: {set(env) - used}"
    # Defaults in the config equal the compose values, so the file also works without them.
    for m in _ENV.finditer(text):
        if m.group(1) in env and m.group(2) is not None:
            assert m.group(2) == env[m.group(1)], m.group(0)


def test_collector_ports_agree_with_compose(
    collector_cfg: dict[str, Any], services: dict[str, Any]
) -> None:
    env = services["collector"]["environment"]
    ports = container_ports(services["collector"])
    listening = set()
    for name, rcv in collector_cfg["receivers"].items():
        if name.split("/")[0] != "otlp":
            continue
        for proto in rcv["protocols"].values():
            listening.add(port_of(_resolve(proto["endpoint"], env)))
    assert listening == {4317, 4318, 4319, 4320}
    assert listening <= ports
    health = collector_cfg["extensions"]["health_check"]["endpoint"]
    assert port_of(_resolve(health, env)) == 13133 in ports
    reader = collector_cfg["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    metrics_port = int(_resolve(str(reader["prometheus"]["port"]), env))
    assert metrics_port == 8888 in ports
    assert _resolve(reader["prometheus"]["host"], env) == "0.0.0.0"
    storage = collector_cfg["extensions"]["file_storage"]["directory"]
    assert _resolve(storage, env) == env["COLLECTOR_STORAGE_DIR"]


def test_collector_exporters_reach_the_right_services(
    collector_cfg: dict[str, Any], services: dict[str, Any]
) -> None:
    env = services["collector"]["environment"]
    endpoints = {
        name: _resolve(exp["endpoint"], env)
        for name, exp in collector_cfg["exporters"].items()
        if "endpoint" in exp
    }
    sidecar_cfg = _load(COMPOSE_DIR / "sidecar" / "config.yaml")
    tempo = _load(COMPOSE_DIR / "tempo" / "tempo.yaml")
    loki = _load(COMPOSE_DIR / "loki" / "loki.yaml")
    expected = {
        "sidecar": port_of(sidecar_cfg["receivers"]["grpc_endpoint"]),
        "tempo": port_of(
            tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        ),
        "loki": loki["server"]["http_listen_port"],
        "prometheus": 9090,
    }
    seen = set()
    for name, ep in endpoints.items():
        host = host_of(ep)
        assert host in services, f"exporter {name} sends to unknown host {host}"
        assert host in expected, (name, ep)
        assert port_of(ep) == expected[host], (name, ep)
        assert port_of(ep) in container_ports(services[host]), (name, ep)
        seen.add(host)
    assert seen == set(expected)
    assert urlsplit(env["LOKI_ENDPOINT"]).path == "/otlp"
    assert urlsplit(env["PROMETHEUS_OTLP_ENDPOINT"]).path == "/api/v1/otlp"


def test_collector_pipelines_route_through_the_sidecar(collector_cfg: dict[str, Any]) -> None:
    env: dict[str, str] = {}
    pipes = collector_cfg["service"]["pipelines"]
    exp = collector_cfg["exporters"]
    rcv = collector_cfg["receivers"]

    def ports_of_receivers(names: list[str]) -> set[int]:
        return {
            port_of(_resolve(p["endpoint"], env))
            for n in names
            for p in rcv[n]["protocols"].values()
        }

    def hosts_of_exporters(names: list[str]) -> set[str]:
        return {host_of(_resolve(exp[n]["endpoint"], env)) for n in names}

    for signal, backend in (("traces", "tempo"), ("logs", "loki")):
        inbound = [
            p
            for n, p in pipes.items()
            if n.split("/")[0] == signal and ports_of_receivers(p["receivers"]) == {4317, 4318}
        ]
        outbound = [
            p
            for n, p in pipes.items()
            if n.split("/")[0] == signal and ports_of_receivers(p["receivers"]) == {4319, 4320}
        ]
        assert inbound and outbound, signal
        assert all(hosts_of_exporters(p["exporters"]) == {"sidecar"} for p in inbound), signal
        assert all(hosts_of_exporters(p["exporters"]) == {backend} for p in outbound), signal


# --- sidecar -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sidecar_cfg() -> dict[str, Any]:
    cfg: dict[str, Any] = _load(COMPOSE_DIR / "sidecar" / "config.yaml")
    return cfg


def test_sidecar_config_matches_the_brief(sidecar_cfg: dict[str, Any]) -> None:
    assert sidecar_cfg["receivers"] == {
        "grpc_endpoint": "0.0.0.0:4317",
        "http_endpoint": "0.0.0.0:4318",
    }
    assert sidecar_cfg["metrics"]["endpoint"] == "0.0.0.0:9464"
    assert sidecar_cfg["processors"] == [
        "normalize",
        "agents",
        "ttft",
        "cost",
        "fallback",
        "redact",
        "enrich",
        "serving",
        "attribution",
        "metrics",
    ]
    assert [d["name"] for d in sidecar_cfg["dimensions"]] == ["tenant", "user", "team", "feature"]
    assert sidecar_cfg["attribution"] == {"requests": True}
    for signal in ("traces", "logs"):
        e = sidecar_cfg["exporters"][signal]
        # uncompressed on the local hop (the Collector compresses towards the backends)
        assert e == {
            "protocol": "grpc",
            "endpoint": "collector:4319",
            "insecure": True,
            "compression": "none",
        }


def test_sidecar_exports_to_the_collector_enriched_receiver(
    sidecar_cfg: dict[str, Any], collector_cfg: dict[str, Any]
) -> None:
    enriched = [
        r
        for n, r in collector_cfg["receivers"].items()
        if port_of(_resolve(r["protocols"]["grpc"]["endpoint"], {})) == 4319
    ]
    assert enriched, "no Collector receiver on 4319"
    for signal in ("traces", "logs"):
        assert port_of(sidecar_cfg["exporters"][signal]["endpoint"]) == 4319


def test_sidecar_service_wiring(services: dict[str, Any], sidecar_cfg: dict[str, Any]) -> None:
    sc = services["sidecar"]
    m = mount_for(sc, "/etc/llm-pipeline/config.yaml")
    assert bind_source(m) == (COMPOSE_DIR / "sidecar" / "config.yaml").resolve()
    assert m["read_only"]
    assert sc["command"] == ["llm-pipeline", "run", "--config", "/etc/llm-pipeline/config.yaml"]
    assert sc["build"] == {"context": "..", "dockerfile": "compose/sidecar.Dockerfile"}
    ports = container_ports(sc)
    assert {
        port_of(sidecar_cfg["receivers"]["grpc_endpoint"]),
        port_of(sidecar_cfg["receivers"]["http_endpoint"]),
        port_of(sidecar_cfg["metrics"]["endpoint"]),
    } <= ports
    demo = services["demo"]
    assert demo["image"] == sc["image"] and demo["build"] == sc["build"]
    assert demo["command"][:2] == ["llm-pipeline", "demo"]
    endpoint = demo["command"][demo["command"].index("--endpoint") + 1]
    assert host_of(endpoint) == "collector" and port_of(endpoint) == 4317


def test_sidecar_config_loads_in_the_sidecar(tmp_path: Path) -> None:
    """The real sidecar accepts compose/sidecar/config.yaml (`llm-pipeline validate`)."""
    try:
        import pipeline.cli  # noqa: F401
    except ImportError:
        pytest.xfail("sidecar not built yet (pipeline.cli not importable)")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "validate",
            "--config",
            str(COMPOSE_DIR / "sidecar" / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    cfg = _load(COMPOSE_DIR / "sidecar" / "config.yaml")
    cfg["exporters"]["traces"]["protocol"] = "carrier-pigeon"
    bad.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode != 0


def test_sidecar_dockerfile() -> None:
    text = (COMPOSE_DIR / "sidecar.Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(re.search(r":\d+\.\d+\.\d+", f) for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    for src in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.M):
        for s in src.split():
            assert (REPO / s).exists(), f"COPY {s}: not in the build context (repo root)"
    ignore = (COMPOSE_DIR / "sidecar.Dockerfile.dockerignore").read_text().split()
    assert "*" in ignore and {"!pyproject.toml", "!README.md", "!pipeline/"} <= set(ignore)
    # the native helpers are built into the image (a wheel from native/, installed with it)
    assert {"!native/", "native/target/"} <= set(ignore)
    assert re.search(r"^COPY native \./native$", text, re.M)
    assert re.search(r"maturin build --release --manifest-path native/Cargo.toml", text)
    # the demo profile runs `llm-pipeline demo` from this image: it needs the [demo] extra
    assert re.search(r"pip install \"\.\[demo\]\" /wheels/\*\.whl$", text, re.M)
    assert '"llm-pipeline", "run", "--config", "/etc/llm-pipeline/config.yaml"' in text


# --- Prometheus ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prom_cfg() -> dict[str, Any]:
    cfg: dict[str, Any] = _load(COMPOSE_DIR / "prometheus" / "prometheus.yml")
    return cfg


def listening_port(service: str, services: dict[str, Any]) -> int:
    if service == "sidecar":
        return port_of(_load(COMPOSE_DIR / "sidecar" / "config.yaml")["metrics"]["endpoint"])
    if service == "collector":
        return 8888
    if service == "tempo":
        return int(_load(COMPOSE_DIR / "tempo" / "tempo.yaml")["server"]["http_listen_port"])
    if service == "loki":
        return int(_load(COMPOSE_DIR / "loki" / "loki.yaml")["server"]["http_listen_port"])
    return {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000}[service]


def test_prometheus_scrape_targets(prom_cfg: dict[str, Any], services: dict[str, Any]) -> None:
    jobs = {j["job_name"]: j for j in prom_cfg["scrape_configs"]}
    want = {
        "llm-pipeline": "sidecar",
        "otel-collector": "collector",
        "tempo": "tempo",
        "alertmanager": "alertmanager",
        "prometheus": "prometheus",
    }
    assert set(want) <= set(jobs)
    for job, cfg in jobs.items():
        targets = [t for sc in cfg["static_configs"] for t in sc["targets"]]
        assert len(targets) == 1, job
        host, port = host_of(targets[0]), port_of(targets[0])
        svc = "prometheus" if host == "localhost" else host
        assert svc in services, f"job {job}: unknown host {host}"
        if job in want:
            assert svc == want[job], job
        assert port == listening_port(svc, services), f"job {job}: {targets[0]}"
        if host != "localhost":
            assert port in container_ports(services[svc]), f"job {job}: {host}:{port} not exposed"


def test_prometheus_alerting_and_rules_paths(
    prom_cfg: dict[str, Any], services: dict[str, Any]
) -> None:
    [am] = [
        t
        for a in prom_cfg["alerting"]["alertmanagers"]
        for sc in a["static_configs"]
        for t in sc["targets"]
    ]
    assert am == f"alertmanager:{listening_port('alertmanager', services)}"
    rules = mount_for(services["prometheus"], "/etc/prometheus/rules")
    assert bind_source(rules) == (REPO / "dashboards" / "rules").resolve() and rules["read_only"]
    assert prom_cfg["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    cfg = mount_for(services["prometheus"], "/etc/prometheus/prometheus.yml")
    assert bind_source(cfg) == (COMPOSE_DIR / "prometheus" / "prometheus.yml").resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


# --- Tempo, Loki ---------------------------------------------------------------------------
def test_tempo_config(services: dict[str, Any]) -> None:
    tempo = _load(COMPOSE_DIR / "tempo" / "tempo.yaml")
    protos = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert port_of(protos["grpc"]["endpoint"]) == 4317
    assert port_of(protos["http"]["endpoint"]) == 4318
    assert tempo["storage"]["trace"]["backend"] == "local"
    gen = tempo["metrics_generator"]
    [rw] = gen["storage"]["remote_write"]
    assert rw["url"] == "http://prometheus:9090/api/v1/write" and rw["send_exemplars"] is True
    procs = tempo["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert {"service-graphs", "span-metrics"} <= set(procs)
    assert "gen_ai.request.model" in gen["processor"]["span_metrics"]["dimensions"]
    # Every path Tempo writes is on its data volume.
    data = mount_for(services["tempo"], "/var/tempo")
    assert data["type"] == "volume"
    paths = [
        gen["storage"]["path"],
        gen["traces_storage"]["path"],
        tempo["storage"]["trace"]["wal"]["path"],
        tempo["storage"]["trace"]["local"]["path"],
    ]
    assert all(p.startswith("/var/tempo/") for p in paths), paths
    assert mount_for(services["tempo"], "/etc/tempo/tempo.yaml")["read_only"]
    assert "-config.file=/etc/tempo/tempo.yaml" in services["tempo"]["command"]


def test_loki_config(services: dict[str, Any]) -> None:
    loki = _load(COMPOSE_DIR / "loki" / "loki.yaml")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["schema_config"]["configs"][-1]["schema"] == "v13"  # structured metadata needs v13
    assert loki["schema_config"]["configs"][-1]["store"] == "tsdb"
    attrs = [
        a
        for c in loki["limits_config"]["otlp_config"]["resource_attributes"]["attributes_config"]
        for a in c["attributes"]
    ]
    assert "service.name" in attrs
    assert loki["common"]["path_prefix"] == mount_for(services["loki"], "/loki")["target"]
    assert "-config.file=/etc/loki/loki.yaml" in services["loki"]["command"]
    assert mount_for(services["loki"], "/etc/loki/loki.yaml")["read_only"]


# --- Grafana, Alertmanager -----------------------------------------------------------------
def test_grafana_service(services: dict[str, Any]) -> None:
    g = services["grafana"]
    env = g["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-admin}"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    prov = mount_for(g, "/etc/grafana/provisioning")
    assert bind_source(prov) == (COMPOSE_DIR / "grafana" / "provisioning").resolve()
    dash = mount_for(g, "/etc/grafana/dashboards")
    assert bind_source(dash) == (REPO / "dashboards").resolve() and dash["read_only"]
    provider = _load(COMPOSE_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml")
    [p] = provider["providers"]
    assert p["options"]["path"] == dash["target"]
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dash["target"] + "/")
    assert (REPO / "dashboards" / home.removeprefix(dash["target"] + "/")).exists()


def test_grafana_datasource_urls(services: dict[str, Any]) -> None:
    ds = _load(COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    seen = {}
    for d in ds["datasources"]:
        host = host_of(d["url"])
        assert host in services, d["url"]
        assert port_of(d["url"]) == listening_port(host, services), d["url"]
        seen[d["type"]] = host
    assert seen == {
        "prometheus": "prometheus",
        "tempo": "tempo",
        "loki": "loki",
        "alertmanager": "alertmanager",
    }


def test_alertmanager_service(services: dict[str, Any]) -> None:
    am = services["alertmanager"]
    m = mount_for(am, "/etc/alertmanager/alertmanager.yml")
    assert bind_source(m) == (COMPOSE_DIR / "alertmanager" / "alertmanager.yml").resolve()
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    cfg = _load(COMPOSE_DIR / "alertmanager" / "alertmanager.yml")
    hosts = {host_of(w["url"]) for r in cfg["receivers"] for w in r.get("webhook_configs", [])}
    for h in hosts:
        assert h in services or any(e.startswith(f"{h}:") for e in am.get("extra_hosts", [])), h
