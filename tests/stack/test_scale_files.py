"""Scale-out files checked against each other: compose/docker-compose.scale.yml (merged over
compose/docker-compose.yml, the way `docker compose -f ... -f ...` merges) and deploy/k8s/*.yaml,
against the sidecar's defaults and config loader, collector/loadbalancing.yaml, the compose
stack and the alert rules' job names. No Docker and no cluster here: structure only (plus
Kubernetes' own schemas when the kubernetes-validate package is installed, and promtool)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from _prom import require_binary

from pipeline.config import MetricsEndpointConfig, ReceiversConfig, load

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "compose"
BASE = COMPOSE_DIR / "docker-compose.yml"
SCALE = COMPOSE_DIR / "docker-compose.scale.yml"
SCHEMA = Path(__file__).resolve().parent / "testdata" / "compose-spec.json"
K8S = REPO / "deploy" / "k8s"
LB_CONFIG = REPO / "collector" / "loadbalancing.yaml"
ALERTS = REPO / "dashboards" / "rules" / "llm-alerts.yml"


def port_of(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


# The sidecar's own defaults: what every manifest must agree with.
GRPC_PORT = port_of(ReceiversConfig().grpc_endpoint)
HTTP_PORT = port_of(ReceiversConfig().http_endpoint)
METRICS_PORT = port_of(MetricsEndpointConfig().endpoint)


def test_sidecar_defaults_are_the_documented_ports() -> None:
    assert (GRPC_PORT, HTTP_PORT, METRICS_PORT) == (4317, 4318, 9464)


def env_default(value: str) -> str:
    """`${env:X:-default}` -> default (a plain value is returned as is)."""
    m = re.fullmatch(r"\$\{env:\w+:-(.*)\}", value)
    return m.group(1) if m else value


# ============================================================================= compose override


def _volume_target(v: Any) -> str:
    return str(v["target"] if isinstance(v, dict) else v.split(":")[1])


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge rules for the keys these files use: mappings merge, sequences append,
    command/entrypoint/healthcheck.test are replaced, volumes/configs/ports unique by target."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in ("command", "entrypoint") or key not in out:
            out[key] = copy.deepcopy(value)
        elif key in ("volumes", "configs", "secrets"):
            targets = {_volume_target(v) if key == "volumes" else v["target"]: v for v in out[key]}
            for v in value:
                targets[_volume_target(v) if key == "volumes" else v["target"]] = v
            out[key] = list(targets.values())
        elif isinstance(value, dict):  # environment, healthcheck (test replaced whole), ...
            out[key] = {**out[key], **value}
        elif isinstance(value, list):
            out[key] = out[key] + [v for v in value if v not in out[key]]
        else:
            out[key] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for top, value in over.items():
        if top == "services":
            for name, svc in value.items():
                out["services"][name] = (
                    _merge_service(out["services"][name], svc)
                    if name in out["services"]
                    else copy.deepcopy(svc)
                )
        elif isinstance(value, dict):
            out[top] = {**out.get(top, {}), **copy.deepcopy(value)}
        else:
            out[top] = copy.deepcopy(value)
    return out


def active(services: dict[str, Any], profiles: set[str]) -> set[str]:
    return {
        n for n, s in services.items() if not s.get("profiles") or set(s["profiles"]) & profiles
    }


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(BASE.read_text())
    return doc


@pytest.fixture(scope="module")
def scale() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SCALE.read_text())
    return doc


@pytest.fixture(scope="module")
def merged(base: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    return merge(base, scale)


@pytest.fixture(scope="module")
def sidecars(merged: dict[str, Any]) -> list[str]:
    """Services running the sidecar image with the `scale` profile on, in compose order."""
    svcs = merged["services"]
    image = svcs["sidecar"]["image"]
    return [
        n
        for n in svcs
        if n in active(svcs, {"scale"}) and svcs[n].get("image") == image and n != "demo"
    ]


def test_override_only_touches_what_it_must(base: dict[str, Any], scale: dict[str, Any]) -> None:
    assert set(scale) == {"services", "configs"}
    assert set(scale["services"]) == {"collector", "sidecar-1", "prometheus"}
    assert set(scale["services"]) - set(base["services"]) == {"sidecar-1"}
    assert scale["services"]["sidecar-1"]["profiles"] == ["scale"]


def test_merged_file_validates_against_compose_spec(merged: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = sorted(validator.iter_errors(merged), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    broken = copy.deepcopy(merged)
    broken["services"]["sidecar-1"]["profiles"] = "scale"  # must be a list
    broken["configs"]["prometheus-scale"]["content"] = 5  # must be a string
    assert len(list(validator.iter_errors(broken))) >= 2


def test_merge_follows_compose_rules(base: dict[str, Any], merged: dict[str, Any]) -> None:
    """The merge these tests rely on: base volumes and environment kept, command replaced."""
    col, base_col = merged["services"]["collector"], base["services"]["collector"]
    assert all(v in col["volumes"] for v in base_col["volumes"])
    assert base_col["environment"].items() <= col["environment"].items()
    assert col["command"] != base_col["command"]
    assert col["ports"] == base_col["ports"]


def test_profile_scale_runs_two_sidecars(merged: dict[str, Any], sidecars: list[str]) -> None:
    svcs = merged["services"]
    assert sidecars == ["sidecar", "sidecar-1"]
    assert "sidecar-1" not in active(svcs, set())  # only with --profile scale
    assert {"collector", "prometheus", "sidecar"} <= active(svcs, set())


def test_second_sidecar_is_the_first_one_again(merged: dict[str, Any]) -> None:
    one, two = merged["services"]["sidecar"], merged["services"]["sidecar-1"]
    for key in ("build", "image", "command", "volumes", "healthcheck", "restart"):
        assert two[key] == one[key], key
    assert "ports" not in two  # the host port 9464 belongs to `sidecar`
    assert {str(GRPC_PORT), str(METRICS_PORT)} <= set(two["expose"])
    assert two.get("networks", one.get("networks")) == one.get("networks")


def test_collector_runs_the_loadbalancing_config(merged: dict[str, Any]) -> None:
    col = merged["services"]["collector"]
    [config_arg] = [a for a in col["command"] if a.startswith("--config=")]
    path = config_arg.removeprefix("--config=")
    mounts = {_volume_target(v): v for v in col["volumes"]}
    source = mounts[path].split(":")[0]
    assert (COMPOSE_DIR / source).resolve() == LB_CONFIG  # relative to the base file's folder
    assert mounts[path].endswith(":ro")
    lb = yaml.safe_load(LB_CONFIG.read_text())["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    assert "SIDECAR_ENDPOINTS" in lb["resolver"]["static"]["hostnames"]
    assert "contrib" in col["image"]  # the image with the load_balancing exporter


def test_load_balancer_lists_every_sidecar_on_its_grpc_port(
    merged: dict[str, Any], sidecars: list[str]
) -> None:
    endpoints = yaml.safe_load(merged["services"]["collector"]["environment"]["SIDECAR_ENDPOINTS"])
    assert endpoints == [f"{s}:{GRPC_PORT}" for s in sidecars]
    sidecar_cfg = yaml.safe_load((COMPOSE_DIR / "sidecar" / "config.yaml").read_text())
    assert port_of(sidecar_cfg["receivers"]["grpc_endpoint"]) == GRPC_PORT
    for s in sidecars:
        assert str(GRPC_PORT) in merged["services"][s]["expose"]


def _scale_prometheus(scale: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(scale["configs"]["prometheus-scale"]["content"])
    return cfg


def test_prometheus_scrapes_every_sidecar_in_one_job(
    base: dict[str, Any], scale: dict[str, Any], merged: dict[str, Any], sidecars: list[str]
) -> None:
    prom = merged["services"]["prometheus"]
    base_cmd = base["services"]["prometheus"]["command"]
    [cfg_flag] = [a for a in prom["command"] if a.startswith("--config.file=")]
    assert [a for a in prom["command"] if a != cfg_flag] == [
        a for a in base_cmd if not a.startswith("--config.file=")
    ]
    [mount] = prom["configs"]
    assert mount == {"source": "prometheus-scale", "target": cfg_flag.split("=", 1)[1]}
    assert "$" not in scale["configs"]["prometheus-scale"]["content"]  # no compose interpolation

    cfg = _scale_prometheus(scale)
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    [static] = jobs["llm-pipeline"]["static_configs"]
    sidecar_cfg = yaml.safe_load((COMPOSE_DIR / "sidecar" / "config.yaml").read_text())
    assert port_of(sidecar_cfg["metrics"]["endpoint"]) == METRICS_PORT
    assert static["targets"] == [f"{s}:{METRICS_PORT}" for s in sidecars]
    # the job name is the alert rules' contract
    assert 'up{job="llm-pipeline"}' in ALERTS.read_text()


def test_prometheus_scale_config_is_the_stack_config_otherwise(scale: dict[str, Any]) -> None:
    stack = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    cfg = _scale_prometheus(scale)
    for c in (stack, cfg):
        for job in c["scrape_configs"]:
            if job["job_name"] == "llm-pipeline":
                job["static_configs"] = "<sidecars>"
    assert cfg == stack


def test_prometheus_scale_config_passes_promtool(scale: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    cfg = _scale_prometheus(scale)
    cfg["rule_files"] = [str(REPO / "dashboards" / "rules" / "*.yml")]
    path = tmp_path / "prometheus-scale.yml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


# ========================================================================== Kubernetes manifests


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object, every manifest but the kustomization."""
    objs: dict[tuple[str, str], dict[str, Any]] = {}
    for _, doc in k8s_docs():
        if doc["kind"] == "Kustomization":
            continue
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in objs, f"duplicate {key}"
        objs[key] = doc
    return objs


SIDECAR = "llm-pipeline-sidecar"
HEADLESS = "llm-pipeline-sidecar-headless"
COLLECTOR = "otelcol-llm"


def test_kinds_present(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(k8s) == {
        ("ConfigMap", "llm-pipeline-sidecar-config"),
        ("Deployment", SIDECAR),
        ("Service", HEADLESS),
        ("Service", SIDECAR),
        ("ServiceMonitor", SIDECAR),
        ("PodMonitor", SIDECAR),
        ("HorizontalPodAutoscaler", SIDECAR),
        ("PodDisruptionBudget", SIDECAR),
        ("ConfigMap", "otelcol-llm-config"),
        ("PersistentVolumeClaim", "otelcol-llm-queue"),
        ("Deployment", COLLECTOR),
        ("Service", COLLECTOR),
        ("ServiceMonitor", COLLECTOR),
    }
    api = {k: v["apiVersion"] for k, v in k8s.items()}
    assert api[("HorizontalPodAutoscaler", SIDECAR)] == "autoscaling/v2"
    assert (
        api[("ServiceMonitor", SIDECAR)]
        == api[("PodMonitor", SIDECAR)]
        == "monitoring.coreos.com/v1"
    )
    assert api[("Deployment", SIDECAR)] == "apps/v1"


def test_manifests_are_namespace_agnostic() -> None:
    for name, doc in k8s_docs():
        assert "namespace" not in doc.get("metadata", {}), name
        assert "namespace" not in doc, name
        if doc["kind"] in ("ServiceMonitor", "PodMonitor"):
            assert "namespaceSelector" not in doc["spec"], name  # its own namespace


def test_kustomization_lists_all_but_the_podmonitor() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # PodMonitor and the sidecar ServiceMonitor scrape the same pods: one of them, never both
    assert listed == files - {"sidecar-podmonitor.yaml"}
    assert "namespace" not in kust


def test_core_kinds_validate_against_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    checked = 0
    for name, doc in k8s_docs():
        if doc["apiVersion"].split("/")[0] in ("v1", "apps", "autoscaling", "policy"):
            for version in ("1.27.0", kv.latest_version()):
                kv.validate(doc, version, strict=True)
            checked += 1
        else:
            assert doc["kind"] in ("Kustomization", "ServiceMonitor", "PodMonitor"), name
    assert checked == 10


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return c


def _ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c["ports"]}


@pytest.fixture(scope="module")
def sidecar_cfg_text(k8s: dict[tuple[str, str], dict[str, Any]]) -> str:
    text: str = k8s[("ConfigMap", "llm-pipeline-sidecar-config")]["data"]["config.yaml"]
    return text


def test_sidecar_configmap_loads_in_the_sidecar(sidecar_cfg_text: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(sidecar_cfg_text)
    cfg = load(path)  # strict: an unknown key or a bad value is an error naming the key
    assert port_of(cfg.receivers.grpc_endpoint) == GRPC_PORT
    assert port_of(cfg.receivers.http_endpoint) == HTTP_PORT
    assert port_of(cfg.metrics.endpoint) == METRICS_PORT
    assert cfg.receivers.grpc_endpoint.startswith("0.0.0.0:")  # reachable from the Collector
    assert cfg.metrics.endpoint.startswith("0.0.0.0:")  # and from Prometheus
    assert "fallback" in cfg.processors and "metrics" in cfg.processors
    assert cfg.file.directory.startswith("/tmp/")  # the only writable path (emptyDir)


def test_sidecar_exports_to_the_collector_enriched_receiver(
    sidecar_cfg_text: str, k8s: dict[tuple[str, str], dict[str, Any]]
) -> None:
    exporters = yaml.safe_load(sidecar_cfg_text)["exporters"]
    svc_ports = {p["name"]: p["port"] for p in k8s[("Service", COLLECTOR)]["spec"]["ports"]}
    col_cfg = yaml.safe_load(k8s[("ConfigMap", "otelcol-llm-config")]["data"]["config.yaml"])
    enriched = port_of(
        env_default(col_cfg["receivers"]["otlp/enriched"]["protocols"]["grpc"]["endpoint"])
    )
    assert svc_ports["enriched-grpc"] == enriched
    for signal in ("traces", "logs", "metrics"):
        ex = exporters[signal]
        assert ex["protocol"] == "grpc"
        assert ex["endpoint"] == f"{COLLECTOR}:{enriched}", signal


def test_sidecar_deployment(
    k8s: dict[tuple[str, str], dict[str, Any]], sidecar_cfg_text: str
) -> None:
    dep = k8s[("Deployment", SIDECAR)]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert _labels_match(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    c = _container(dep)
    assert _ports(c) == {"otlp-grpc": GRPC_PORT, "otlp-http": HTTP_PORT, "metrics": METRICS_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "metrics"}, probe
    # non-root, nothing to escalate, read-only root filesystem
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (sidecar.Dockerfile)
    assert "USER 10001:10001" in (COMPOSE_DIR / "sidecar.Dockerfile").read_text()
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
    # config from the ConfigMap, at the path the command reads
    cfg_path = Path(c["command"][c["command"].index("--config") + 1])
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    [cfg_vol] = [n for n, v in vols.items() if "configMap" in v]
    assert vols[cfg_vol]["configMap"]["name"] == "llm-pipeline-sidecar-config"
    assert mounts[cfg_vol]["mountPath"] == str(cfg_path.parent) and mounts[cfg_vol]["readOnly"]
    assert cfg_path.name == "config.yaml"
    tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in vols[tmp[0]["name"]]
    # the spool (acknowledged, not yet forwarded) on an emptyDir big enough for every signal
    cfg = yaml.safe_load(sidecar_cfg_text)
    [spool] = [m for m in c["volumeMounts"] if m["mountPath"] == cfg["queue"]["spool_directory"]]
    size = vols[spool["name"]]["emptyDir"]["sizeLimit"]
    assert size.endswith("Gi") and int(size[:-2]) * 2**30 >= 3 * cfg["queue"]["spool_max_bytes"]
    # SIGTERM: preStop delay + queue drain fit in the grace period
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    need = int(pre_stop[1]) + cfg["queue"]["shutdown_timeout_s"] + 5
    assert pod["terminationGracePeriodSeconds"] >= need
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert c["image"].endswith(f":{version}")


def test_sidecar_services(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod_labels = k8s[("Deployment", SIDECAR)]["spec"]["template"]["metadata"]["labels"]
    names = _ports(_container(k8s[("Deployment", SIDECAR)]))
    headless, normal = k8s[("Service", HEADLESS)]["spec"], k8s[("Service", SIDECAR)]["spec"]
    assert headless["clusterIP"] == "None"  # one DNS record per pod, for the load balancer
    assert headless.get("publishNotReadyAddresses", False) is False  # only ready pods in the ring
    assert normal.get("clusterIP") != "None"
    for spec in (headless, normal):
        assert _labels_match(spec["selector"], pod_labels)
        for p in spec["ports"]:
            assert names[p["targetPort"]] == p["port"], p
    assert [p["port"] for p in headless["ports"]] == [GRPC_PORT]
    assert {p["name"] for p in normal["ports"]} == {"otlp-grpc", "otlp-http", "metrics"}


def _alert_jobs() -> set[str]:
    return set(re.findall(r'up\{job="([^"]+)"\}', ALERTS.read_text()))


def test_monitors_select_the_right_objects(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert _alert_jobs() == {"llm-pipeline", "otel-collector"}
    sm = k8s[("ServiceMonitor", SIDECAR)]["spec"]
    services = {n: o for (kind, n), o in k8s.items() if kind == "Service"}
    selected = [
        n
        for n, o in services.items()
        if _labels_match(sm["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    assert selected == [SIDECAR]  # not the headless one: each pod scraped once
    svc = services[SIDECAR]
    assert svc["metadata"]["labels"][sm["jobLabel"]] == "llm-pipeline"
    [ep] = sm["endpoints"]
    assert ep["path"] == "/metrics"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}[ep["port"]] == METRICS_PORT

    pm = k8s[("PodMonitor", SIDECAR)]["spec"]
    dep = k8s[("Deployment", SIDECAR)]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(pm["selector"]["matchLabels"], pod_labels)
    assert not _labels_match(
        pm["selector"]["matchLabels"],
        k8s[("Deployment", COLLECTOR)]["spec"]["template"]["metadata"]["labels"],
    )
    assert pod_labels[pm["jobLabel"]] == "llm-pipeline"
    [pep] = pm["podMetricsEndpoints"]
    assert _ports(_container(dep))[pep["port"]] == METRICS_PORT and pep["path"] == "/metrics"

    csm = k8s[("ServiceMonitor", COLLECTOR)]["spec"]
    selected = [
        n
        for n, o in services.items()
        if _labels_match(csm["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    assert selected == [COLLECTOR]
    assert services[COLLECTOR]["metadata"]["labels"][csm["jobLabel"]] == "otel-collector"
    col_cfg = yaml.safe_load(k8s[("ConfigMap", "otelcol-llm-config")]["data"]["config.yaml"])
    reader = col_cfg["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    port = int(env_default(reader["prometheus"]["port"]))
    [cep] = csm["endpoints"]
    assert {p["name"]: p["port"] for p in services[COLLECTOR]["spec"]["ports"]}[cep["port"]] == port


def test_hpa_scales_the_sidecars_on_cpu(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    hpa = k8s[("HorizontalPodAutoscaler", SIDECAR)]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": SIDECAR}
    [metric] = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # Utilization is relative to the CPU request, which must therefore be set
    assert "cpu" in _container(k8s[("Deployment", SIDECAR)])["resources"]["requests"]
    pdb = k8s[("PodDisruptionBudget", SIDECAR)]["spec"]
    pod_labels = k8s[("Deployment", SIDECAR)]["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(pdb["selector"]["matchLabels"], pod_labels)


def test_collector_config_is_loadbalancing_yaml_with_the_dns_resolver(
    k8s: dict[tuple[str, str], dict[str, Any]],
) -> None:
    cfg = yaml.safe_load(k8s[("ConfigMap", "otelcol-llm-config")]["data"]["config.yaml"])
    repo = yaml.safe_load(LB_CONFIG.read_text())
    lb = cfg["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    assert list(lb["resolver"]) == ["dns"]  # exactly one resolver
    dns = lb["resolver"]["dns"]
    headless = k8s[("Service", HEADLESS)]
    assert dns["hostname"] == headless["metadata"]["name"]  # short name: same namespace
    assert int(dns["port"]) == headless["spec"]["ports"][0]["port"] == GRPC_PORT
    # everything else is collector/loadbalancing.yaml
    cfg["exporters"]["load_balancing"]["resolver"] = repo["exporters"]["load_balancing"]["resolver"]
    assert cfg == repo


def test_collector_deployment(
    k8s: dict[tuple[str, str], dict[str, Any]], base: dict[str, Any]
) -> None:
    dep = k8s[("Deployment", COLLECTOR)]
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert _labels_match(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    c = _container(dep)
    # the same Collector image as the compose stack (it has the load_balancing exporter)
    assert c["image"] == base["services"]["collector"]["image"]
    cfg = yaml.safe_load(k8s[("ConfigMap", "otelcol-llm-config")]["data"]["config.yaml"])
    recv = cfg["receivers"]
    want = {
        "otlp-grpc": recv["otlp"]["protocols"]["grpc"]["endpoint"],
        "otlp-http": recv["otlp"]["protocols"]["http"]["endpoint"],
        "enriched-grpc": recv["otlp/enriched"]["protocols"]["grpc"]["endpoint"],
        "enriched-http": recv["otlp/enriched"]["protocols"]["http"]["endpoint"],
        "health": cfg["extensions"]["health_check"]["endpoint"],
    }
    ports = _ports(c)
    for name, endpoint in want.items():
        assert ports[name] == port_of(env_default(endpoint)), name
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "health"
    # config mounted where --config points
    [arg] = [a for a in c["args"] if a.startswith("--config=")]
    cfg_path = Path(arg.removeprefix("--config="))
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts[str(cfg_path.parent)]["name"]]["configMap"]["name"] == "otelcol-llm-config"
    # the persistent queue on the PVC, where COLLECTOR_STORAGE_DIR says
    env = {e["name"]: e["value"] for e in c["env"]}
    queue = mounts[env["COLLECTOR_STORAGE_DIR"]]
    claim = vols[queue["name"]]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in k8s
    assert spec["strategy"]["type"] == "Recreate"  # ReadWriteOnce: one pod at a time
    assert int(env["COLLECTOR_MEMORY_LIMIT_MIB"]) < 1024  # below the 1Gi container limit
    assert c["resources"]["limits"]["memory"] == "1Gi"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # the Service exposes the container's ports by name
    svc = k8s[("Service", COLLECTOR)]["spec"]
    assert _labels_match(svc["selector"], spec["template"]["metadata"]["labels"])
    for p in svc["ports"]:
        assert ports[p["targetPort"]] == p["port"], p
