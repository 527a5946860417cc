"""Security: loopback by default, bearer-token auth, TLS on receivers and /metrics, no secrets
in the logs.

The auth and TLS cases use the OpenTelemetry SDK's own exporters (headers, credentials,
certificate_file), the way an application would be configured.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.config import Config, ConfigError, load
from pipeline.sidecar import Sidecar
from tests.helpers.metrics import value
from tests.helpers.otlp_sink import OtlpSink
from tests.helpers.sidecar import SidecarProcess, start_sidecar

pytestmark = pytest.mark.e2e

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# -- helpers ---------------------------------------------------------------------------------


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for localhost / 127.0.0.1.

    Returns (CA certificate, server certificate, server key) as PEM files; clients trust the
    CA file, as they would a private CA.
    """
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llm-pipeline test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def make_spans(service: str = "sec-svc", n: int = 3) -> list[ReadableSpan]:
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("sec")
    for i in range(n):
        with tracer.start_as_current_span(
            f"chat {i}",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
            },
        ):
            pass
    tp.shutdown()
    return list(mem.get_finished_spans())


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process `pid` holds.

    An IPv6 socket listening on "::" (every address, v4 included) shows as "::".
    """
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, family in (("tcp", 4), ("tcp6", 6)):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            if family == 4:
                ip = str(ipaddress.IPv4Address(raw[::-1]))
            else:  # four little-endian 32-bit words
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                v6 = ipaddress.IPv6Address(words)
                ip = str(v6.ipv4_mapped or v6)  # ::ffff:127.0.0.1 is 127.0.0.1
            out.add((ip, int(hex_port, 16)))
    return out


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink().start()
    yield s
    s.stop()


def wait_for(pred: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _exporters(sink: OtlpSink, **extra: Any) -> dict[str, Any]:
    return {
        "traces": {
            "protocol": "grpc",
            "endpoint": f"127.0.0.1:{sink.grpc_port}",
            **extra.get("traces", {}),
        },
        "logs": {
            "protocol": "http",
            "endpoint": f"http://127.0.0.1:{sink.http_port}",
            **extra.get("logs", {}),
        },
    }


# -- loopback by default ---------------------------------------------------------------------


def test_defaults_bind_loopback_only(tmp_path: Path) -> None:
    cfg = Config()
    for ep in (cfg.receivers.grpc_endpoint, cfg.receivers.http_endpoint, cfg.metrics.endpoint):
        assert ep.rpartition(":")[0] == "127.0.0.1"
    assert cfg.receivers.auth_token is None and cfg.metrics.auth_token is None
    # The sockets the defaults open (same hosts, any free port) listen on loopback only.
    cfg.receivers.grpc_endpoint = cfg.receivers.grpc_endpoint.rpartition(":")[0] + ":0"
    cfg.receivers.http_endpoint = cfg.receivers.http_endpoint.rpartition(":")[0] + ":0"
    cfg.metrics.endpoint = cfg.metrics.endpoint.rpartition(":")[0] + ":0"
    cfg.file.directory = str(tmp_path / "out")
    sc = Sidecar(cfg)
    sc.start()
    try:
        assert sc.grpc is not None and sc.http is not None and sc.metrics is not None
        ports = {sc.grpc.port, sc.http.port, sc.metrics.port}
        mine = {(ip, p) for ip, p in listening_sockets(os.getpid()) if p in ports}
        assert mine == {("127.0.0.1", p) for p in ports}
    finally:
        sc.shutdown()


def test_running_sidecar_listens_on_loopback_only(tmp_path: Path) -> None:
    sc = start_sidecar(tmp_path)
    try:
        socks = listening_sockets(sc.proc.pid)
        assert {p for _, p in socks} >= {sc.grpc_port, sc.http_port, sc.metrics_port}
        assert {ip for ip, _ in socks} == {"127.0.0.1"}, socks  # no 0.0.0.0, no ::
    finally:
        assert sc.stop() == 0


# -- bearer tokens ---------------------------------------------------------------------------

RECV_TOKEN = "recv-tok-5f1c0e2a9b"
METRICS_TOKEN = "metrics-tok-77aa31d4"


@pytest.fixture
def authed(tmp_path: Path, sink: OtlpSink) -> Iterator[SidecarProcess]:
    sc = start_sidecar(
        tmp_path,
        {
            "receivers": {"auth_token": RECV_TOKEN},
            "metrics": {"auth_token": METRICS_TOKEN},
            "exporters": _exporters(sink),
        },
    )
    yield sc
    assert sc.stop() == 0, sc.logs()


def _scrape(sc: SidecarProcess, token: str | None) -> httpx.Response:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(sc.metrics_url, headers=headers, timeout=5)


def test_sdk_exporters_need_the_bearer_token(authed: SidecarProcess, sink: OtlpSink) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    spans = make_spans()
    url = f"{authed.http_url}/v1/traces"
    bearer = {"authorization": f"Bearer {RECV_TOKEN}"}
    wrong = {"authorization": "Bearer not-the-token"}
    assert GrpcExporter(endpoint=authed.grpc_endpoint, insecure=True).export(spans) == (
        SpanExportResult.FAILURE
    )
    assert GrpcExporter(endpoint=authed.grpc_endpoint, insecure=True, headers=wrong).export(
        spans
    ) == (SpanExportResult.FAILURE)
    assert HttpExporter(endpoint=url).export(spans) == SpanExportResult.FAILURE
    assert HttpExporter(endpoint=url, headers=wrong).export(spans) == SpanExportResult.FAILURE
    assert sink.spans() == []
    grpc_ok = GrpcExporter(endpoint=authed.grpc_endpoint, insecure=True, headers=bearer)
    assert grpc_ok.export(spans) == SpanExportResult.SUCCESS
    assert HttpExporter(endpoint=url, headers=bearer).export(spans) == SpanExportResult.SUCCESS
    wait_for(lambda: len(sink.spans()) == 6)
    text = _scrape(authed, METRICS_TOKEN).text
    assert value(text, "llm_pipeline_received_items_total", signal="traces") == 6
    assert (
        value(text, "llm_pipeline_rejected_items_total", signal="traces", reason="unauthenticated")
        == 4
    )


def test_raw_answers_without_the_token(authed: SidecarProcess) -> None:
    body = encode_spans(make_spans()).SerializeToString()
    r = httpx.post(
        f"{authed.http_url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = httpx.post(
        f"{authed.http_url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Basic {RECV_TOKEN}"},
    )
    assert r.status_code == 401  # the right secret under the wrong scheme is still refused
    with grpc.insecure_channel(authed.grpc_endpoint) as ch:
        call = ch.unary_unary(TRACES)
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(body, timeout=5, metadata=(("authorization", f"Bearer {RECV_TOKEN}"),))


def test_metrics_endpoint_needs_its_own_token(authed: SidecarProcess) -> None:
    assert _scrape(authed, None).status_code == 401
    assert _scrape(authed, RECV_TOKEN).status_code == 401  # the receivers' token is not it
    ok = _scrape(authed, METRICS_TOKEN)
    assert ok.status_code == 200 and "llm_pipeline_build_info" in ok.text
    health = httpx.get(f"http://127.0.0.1:{authed.metrics_port}/health", timeout=5)
    assert health.status_code == 200  # liveness stays open for orchestrators


# -- TLS -------------------------------------------------------------------------------------


def test_tls_receivers_with_sdk_exporters(
    tmp_path: Path, sink: OtlpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    # requests lets these override the session's `verify`, i.e. the exporter's certificate_file.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    ca, cert, key = make_certs(tmp_path)
    sc = start_sidecar(
        tmp_path,
        {
            "receivers": {"tls_cert_file": str(cert), "tls_key_file": str(key)},
            "exporters": _exporters(sink),
        },
    )
    try:
        spans = make_spans()
        creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        tls_grpc = GrpcExporter(endpoint=f"localhost:{sc.grpc_port}", credentials=creds)
        assert tls_grpc.export(spans) == SpanExportResult.SUCCESS
        https = f"https://127.0.0.1:{sc.http_port}/v1/traces"
        assert (
            HttpExporter(endpoint=https, certificate_file=str(ca)).export(spans)
            == SpanExportResult.SUCCESS
        )
        wait_for(lambda: len(sink.spans()) == 6)
        # Plain text to a TLS port is not served.
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"http://127.0.0.1:{sc.http_port}/v1/traces", content=b"", timeout=3)
        with grpc.insecure_channel(sc.grpc_endpoint) as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary(TRACES)(b"", timeout=3)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate the client does not trust is refused by the client.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.post(https, content=b"", timeout=3)
        # A client that opens a connection and never says hello blocks no one else.
        with socket.create_connection(("127.0.0.1", sc.http_port)):
            r = httpx.post(
                https,
                content=encode_spans(spans).SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
                verify=ssl.create_default_context(cafile=str(ca)),
                timeout=5,
            )
            assert r.status_code == 200
    finally:
        assert sc.stop() == 0, sc.logs()
    assert "Traceback" not in sc.logs()  # failed handshakes are the clients' problem


def test_metrics_over_https_with_a_token(tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path)
    cfg = Config()
    cfg.receivers.grpc_endpoint, cfg.receivers.http_endpoint = "127.0.0.1:0", ""
    cfg.metrics.endpoint = "127.0.0.1:0"
    cfg.metrics.tls_cert_file, cfg.metrics.tls_key_file = str(cert), str(key)
    cfg.metrics.auth_token = METRICS_TOKEN
    cfg.file.directory = str(tmp_path / "out")
    cfg.validate()
    sc = Sidecar(cfg)
    assert sc.metrics is not None
    sc.start()
    try:
        url = sc.addresses()["metrics"]
        assert url.startswith("https://127.0.0.1:") and url.endswith("/metrics")
        trust = ssl.create_default_context(cafile=str(ca))
        auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        with socket.create_connection(("127.0.0.1", sc.metrics.port)):  # a silent client
            r = httpx.get(url, headers=auth, verify=trust, timeout=5)
        assert r.status_code == 200 and "llm_pipeline_build_info" in r.text
        assert httpx.get(url, verify=trust, timeout=5).status_code == 401
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, headers=auth, timeout=5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https://", "http://"), headers=auth, timeout=3)
    finally:
        sc.shutdown()


@pytest.mark.parametrize(
    "yaml_text",
    ["metrics: {tls_cert_file: a.pem}", "metrics: {tls_key_file: k.pem}"],
)
def test_metrics_tls_needs_both_files(tmp_path: Path, yaml_text: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match="tls_cert_file and tls_key_file go together"):
        load(p)


# -- no secrets in the logs ------------------------------------------------------------------


def test_no_secret_reaches_the_logs(tmp_path: Path, sink: OtlpSink) -> None:
    secrets = {
        "receiver token": "rcv-SECRET-1b2c3d4e5f",
        "metrics token": "met-SECRET-6a7b8c9d0e",
        "grpc exporter header": "exp-SECRET-aa11bb22cc",
        "http exporter header": "hdr-SECRET-dd33ee44ff",
        "http exporter URL password": "url-SECRET-9988776655",
    }
    sink.failing = True
    sc = start_sidecar(
        tmp_path,
        {
            "log_level": "debug",
            "receivers": {"auth_token": secrets["receiver token"]},
            "metrics": {"auth_token": secrets["metrics token"]},
            "exporters": {
                "traces": {
                    "protocol": "grpc",
                    "endpoint": f"127.0.0.1:{sink.grpc_port}",
                    "headers": {"authorization": f"Bearer {secrets['grpc exporter header']}"},
                },
                "logs": {
                    "protocol": "http",
                    "endpoint": (
                        f"http://svc:{secrets['http exporter URL password']}"
                        f"@127.0.0.1:{sink.http_port}"
                    ),
                    "headers": {"X-Api-Key": secrets["http exporter header"]},
                },
            },
            "queue": {"retry_initial_s": 0.1, "retry_max_s": 0.3, "shutdown_timeout_s": 1.0},
        },
    )
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        good = {"authorization": f"Bearer {secrets['receiver token']}"}
        exporter = OTLPSpanExporter(endpoint=sc.grpc_endpoint, insecure=True, headers=good)
        assert exporter.export(make_spans()) == SpanExportResult.SUCCESS
        log_body = (
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}'
        )
        ok = httpx.post(
            f"{sc.http_url}/v1/logs",
            content=log_body,
            headers={"Content-Type": "application/json", **good},
        )
        assert ok.status_code == 200
        # Failures of every kind: a wrong token, bad input, the destinations refusing.
        bad = httpx.post(
            f"{sc.http_url}/v1/traces",
            content=b"x",
            headers={"Authorization": f"Bearer {secrets['metrics token']}"},
        )
        assert bad.status_code == 401
        garbage = httpx.post(
            f"{sc.http_url}/v1/traces",
            content=b"\xff\xff",
            headers={"Content-Type": "application/x-protobuf", **good},
        )
        assert garbage.status_code == 400
        wait_for(lambda: sink.attempts >= 4)  # both exporters failed and retried
        metrics = httpx.get(
            sc.metrics_url, headers={"Authorization": f"Bearer {secrets['metrics token']}"}
        ).text
        sink.failing = False
        wait_for(lambda: len(sink.spans()) == 3 and len(sink.log_records()) == 1)
    finally:
        assert sc.stop() == 0
    logs = sc.logs()
    assert "export failed, retrying" in logs  # the failures were logged...
    assert "llm-pipeline started" in logs
    for what, secret in secrets.items():  # ...without a secret in them
        assert secret not in logs, f"{what} leaked into the log"
        assert secret not in metrics, f"{what} leaked into /metrics"
