from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Config, ConfigError, ExporterConfig, load

DATA = Path(__file__).parent / "testdata" / "configs"


def test_defaults_are_the_embedded_local_setup() -> None:
    cfg = load(None)
    assert cfg.receivers.grpc_endpoint == "127.0.0.1:4317"
    assert cfg.receivers.http_endpoint == "127.0.0.1:4318"
    assert cfg.metrics.endpoint == "127.0.0.1:9464"
    assert cfg.exporters.traces.protocol == "file"
    assert cfg.file.directory == "./pipeline-data"
    assert cfg.processors[0] == "normalize" and cfg.processors[-1] == "metrics"


def test_full_file_loads_typed() -> None:
    cfg = load(DATA / "full.yaml")
    assert cfg.metrics.max_series == 500
    assert cfg.exporters.logs.headers == {"X-Scope-OrgID": "demo"}
    o = cfg.price_overrides["ft:acme-support-v2"]
    assert (o.input_per_mtok, o.output_per_mtok, o.cache_read_per_mtok) == (3.0, 12.0, 0.3)
    assert o.cache_write_per_mtok is None


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("receivers: {grpc_endpoint: nope}", "receivers.grpc_endpoint: expected HOST:PORT"),
        ("recievers: {}", "unknown key(s) ['recievers']"),
        ("processors: [normalize, tokenize]", "unknown ['tokenize']"),
        ("exporters: {traces: {protocol: grpc}}", "exporters.traces.endpoint is required"),
        ("exporters: {traces: {protocol: kafka, endpoint: x:1}}", "expected grpc, http or file"),
        ("queue: {max_items: 0}", "queue.max_items must be >= 1"),
        ("queue: {max_items: lots}", "queue.max_items: expected an integer"),
        ("metrics: {max_series: 0}", "metrics.max_series must be >= 1"),
        ("metrics: {semconv: latest}", "metrics.semconv: expected v1.41, development or both"),
        ("receivers: {http_max_connections: 0}", "receivers.http_max_connections must be >= 1"),
        ("receivers: {http_read_timeout_s: 0}", "receivers.http_read_*timeout_s must be > 0"),
        ("receivers: {http_min_body_rate: -1}", "http_min_body_rate >= 0"),
        (
            "receivers: {grpc_transport: tonic}",
            "receivers.grpc_transport: expected auto, native or grpcio",
        ),
        (
            "exporters: {traces: {protocol: grpc, endpoint: 'a:1', headers: {'X Tenant': a}}}",
            "exporters.traces.headers: 'X Tenant' is not a valid header",
        ),
        (
            "exporters: {logs: {protocol: http, endpoint: 'http://a:1', headers: {k: \"a\\nb\"}}}",
            "exporters.logs.headers: 'k' is not a valid header",
        ),
        (
            "exporters: {traces: {protocol: grpc, endpoint: 'a:1', grpc_transport: x}}",
            "exporters.traces.grpc_transport: expected auto, native or grpcio",
        ),
        (
            "exporters: {logs: {protocol: grpc, endpoint: 'a:1', insecure: false,"
            " grpc_transport: native}}",
            "exporters.logs.grpc_transport native has no TLS",
        ),
        (
            "receivers: {grpc_transport: native, tls_cert_file: c, tls_key_file: k}",
            "native has no TLS",
        ),
        (
            "receivers: {max_request_bytes: 2000, http_max_inflight_bytes: 1000}",
            "http_max_inflight_bytes must be >= receivers.max_request_bytes",
        ),
        ("price_overrides: {m: {input_per_mtok: -1, output_per_mtok: 1}}", "must be >= 0"),
        (
            "exporters: {traces: {protocl: grpc}}",
            "exporters.traces: unknown key(s) ['protocl']; did you mean 'protocol'?",
        ),
        ("dimensions: [{name: t, sorces: []}]", "dimensions[0]: unknown key(s) ['sorces']"),
        ("queue: {max_items: '5'}", "queue.max_items: expected an integer, got '5'"),
        ("file: {max_files: true}", "file.max_files: expected an integer, got True"),
        ("metrics: {push: {insecure: 1}}", "metrics.push.insecure: expected true or false"),
        ("exporters: {logs: {compression: zstd}}", "exporters.logs.compression: expected gzip or"),
        ("price_overrides: {m: {input_per_mtok: 1}}", "price_overrides.m.output_per_mtok: "),
        ("- just a list", "the top level must be a mapping"),
        ("receivers: {grpc_endpoint: [", "invalid YAML"),
    ],
)
def test_bad_configs_fail_with_the_key_named(tmp_path: Path, yaml_text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load(p)
    assert needle in str(e.value)


def test_a_number_where_a_string_goes_is_taken_as_written(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(
        "exporters: {logs: {protocol: http, endpoint: 'http://a:1', headers: {X-Org: 42}}}"
    )
    assert load(p).exporters.logs.headers == {"X-Org": "42"}


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", "--config", str(DATA / "full.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("queue: {max_items: -5}\n")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "queue.max_items must be >= 1" in r.stderr


def test_config_dataclass_validate_catches_programmatic_mistakes() -> None:
    cfg = Config()
    cfg.processors = ["metrics", "metrics"]
    with pytest.raises(ConfigError, match="once"):
        cfg.validate()


def test_union_fields_take_either_form(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("redact: {types: [email, phone]}\n")
    assert load(p).redact.enabled_types() == {"email", "phone"}
    p.write_text("redact: {types: {phone: false}}\n")
    assert "phone" not in load(p).redact.enabled_types()
    p.write_text("redact: {types: 5}\n")
    with pytest.raises(ConfigError, match=r"redact\.types"):
        load(p)


def test_bench_command_passes_its_arguments_through_in_order() -> None:
    from pipeline import cli

    seen: list[list[str]] = []
    original = cli._bench
    cli._bench = lambda a: seen.append(a.rest) or 0  # type: ignore[assignment,func-returns-value]
    try:
        cli.main(["bench", "--quick", "--systems", "sidecar"])
        cli.main(["bench", "--", "--rates", "2000"])
    finally:
        cli._bench = original  # type: ignore[assignment]
    assert seen == [["--quick", "--systems", "sidecar"], ["--rates", "2000"]]


def test_native_transport_needs_the_native_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import _native

    monkeypatch.setattr(_native, "GrpcClient", None)
    cfg = Config()
    cfg.exporters.traces = ExporterConfig(protocol="grpc", endpoint="a:1", grpc_transport="native")
    with pytest.raises(ConfigError, match=r"exporters\.traces\.grpc_transport native: the native"):
        cfg.validate()
    cfg.exporters.traces.grpc_transport = "auto"
    cfg.receivers.grpc_transport = "native"
    with pytest.raises(ConfigError, match=r"receivers\.grpc_transport native: the native"):
        cfg.validate()
