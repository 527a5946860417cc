"""Typed configuration: dataclasses with defaults, `validate()`, and strict YAML loading.

With no file at all the sidecar runs on the embedded defaults: OTLP on 127.0.0.1:4317/4318,
/metrics on 127.0.0.1:9464, traces and logs to OTLP-JSON-lines files under ./pipeline-data.
Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import operator
import re
import typing
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml

from .budgets.config import BudgetConfig, validate_budgets
from .processors.cost import CostConfig, PriceOverride
from .processors.dedupe import DedupeConfig
from .processors.dimensions import AttributionConfig, DimensionConfig, validate_dimensions
from .processors.fallback import FallbackConfig
from .processors.redact import RedactConfig
from .processors.registry import NAMES, order_problem

T = TypeVar("T")
Transport = Literal["auto", "native", "grpcio"]
Compression = Literal["gzip", "none"]

KNOWN_PROCESSORS = NAMES  # processors/registry.py, in the default order
DEFAULT_PROCESSORS = list(KNOWN_PROCESSORS)


class ConfigError(ValueError):
    """A configuration problem, with the path of the offending key."""


def _check_endpoint(name: str, value: str) -> None:
    if not value:
        return
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: expected HOST:PORT, got {value!r}")


@dataclass
class ReceiversConfig:
    grpc_endpoint: str = "127.0.0.1:4317"  # "" disables
    http_endpoint: str = "127.0.0.1:4318"
    max_request_bytes: int = 16 * 1024 * 1024  # as received (compressed)
    max_decompressed_bytes: int = 64 * 1024 * 1024  # gzip bombs stop here
    auth_token: str | None = None  # bearer token required when set
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # OTLP/HTTP under a flood: open connections (a thread each) and request bytes in flight
    http_max_connections: int = 256
    http_max_inflight_bytes: int = 64 * 1024 * 1024  # decompressed, reserved as bodies arrive
    # OTLP/HTTP slow senders: a request's head is due within http_read_header_timeout_s, its
    # body within http_read_timeout_s and at http_min_body_rate bytes/s on average after its
    # first 5 s (0: no minimum); a kept-alive connection may idle http_idle_timeout_s.
    http_read_header_timeout_s: float = 10.0
    http_read_timeout_s: float = 30.0
    http_min_body_rate: int = 16 * 1024
    http_idle_timeout_s: float = 60.0
    # The OTLP/gRPC transport: "native" (native/src/grpc.rs), "grpcio", or "auto": native
    # when it is built and TLS is off (it speaks plain HTTP/2 only), grpcio otherwise.
    grpc_transport: Transport = "auto"
    # Request bytes being read or handled at once by the gRPC receiver, counted once
    # gunzipped (more gets UNAVAILABLE with a retry hint); grpcio counts them once read.
    grpc_max_inflight_bytes: int = 64 * 1024 * 1024
    # gRPC under hostile clients: streams at once per connection (HTTP/2
    # SETTINGS_MAX_CONCURRENT_STREAMS), open connections (native: at the cap the longest idle
    # one is closed for a new one), a request not arrived whole within request_timeout_s is
    # answered DEADLINE_EXCEEDED and reset, a connection with no call for idle_timeout_s gets
    # GOAWAY (clients reconnect when they next send).
    grpc_max_streams_per_connection: int = 32
    grpc_max_connections: int = 1024
    grpc_request_timeout_s: float = 30.0
    grpc_idle_timeout_s: float = 120.0

    def validate(self) -> None:
        _check_endpoint("receivers.grpc_endpoint", self.grpc_endpoint)
        _check_transport("receivers.grpc_transport", self.grpc_transport, not self.tls_cert_file)
        _check_endpoint("receivers.http_endpoint", self.http_endpoint)
        if not self.grpc_endpoint and not self.http_endpoint:
            raise ConfigError("receivers: at least one of grpc_endpoint/http_endpoint is needed")
        if self.max_request_bytes <= 0 or self.max_decompressed_bytes <= 0:
            raise ConfigError("receivers: size limits must be > 0")
        if self.http_max_connections < 1:
            raise ConfigError("receivers.http_max_connections must be >= 1")
        if min(self.http_read_header_timeout_s, self.http_read_timeout_s) <= 0:
            raise ConfigError("receivers.http_read_*timeout_s must be > 0")
        if self.http_idle_timeout_s <= 0 or self.http_min_body_rate < 0:
            raise ConfigError(
                "receivers: http_idle_timeout_s must be > 0 and http_min_body_rate >= 0"
            )
        if self.http_max_inflight_bytes < self.max_request_bytes:
            raise ConfigError(
                "receivers.http_max_inflight_bytes must be >= receivers.max_request_bytes"
                " (a request of the largest allowed size must fit)"
            )
        if self.grpc_max_inflight_bytes < self.max_request_bytes:
            raise ConfigError(
                "receivers.grpc_max_inflight_bytes must be >= receivers.max_request_bytes"
            )
        if self.grpc_max_streams_per_connection < 1 or self.grpc_max_connections < 1:
            raise ConfigError(
                "receivers.grpc_max_streams_per_connection and grpc_max_connections must be >= 1"
            )
        if not self.grpc_request_timeout_s > 0 or not self.grpc_idle_timeout_s > 0:
            raise ConfigError(
                "receivers.grpc_request_timeout_s and grpc_idle_timeout_s must be > 0"
            )
        _check_tls_pair("receivers", self.tls_cert_file, self.tls_key_file)


@dataclass
class PushConfig:
    """`metrics.push`: the derived metrics pushed over OTLP (off without an endpoint)."""

    endpoint: str = ""  # grpc: HOST:PORT; http/protobuf: base URL (/v1/metrics is appended)
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    interval_s: float = 15.0
    temporality: Literal["cumulative", "delta"] = "cumulative"
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = True
    timeout_s: float = 10.0
    compression: Compression = "gzip"
    grpc_transport: Transport = "auto"
    self: bool = False  # push the llm_pipeline_* self-metrics too
    service_name: str = "llm-otel-pipeline"  # the sidecar's resource service.name

    def validate(self) -> None:
        if not self.endpoint:
            return
        ex = ExporterConfig(
            "grpc" if self.protocol == "grpc" else "http",
            self.endpoint,
            self.headers,
            self.insecure,
            self.timeout_s,
            self.compression,
            self.grpc_transport,
        )
        ex.validate("metrics.push")
        if not self.interval_s >= 0.1:
            raise ConfigError("metrics.push.interval_s must be >= 0.1")
        if not self.service_name:
            raise ConfigError("metrics.push.service_name must not be empty")


@dataclass
class MetricsEndpointConfig:
    endpoint: str = "127.0.0.1:9464"  # "" disables /metrics
    max_series: int = 2000
    # GenAI metric names: semantic-conventions v1.41 (default), semantic-conventions-genai's
    # development names (and the proposed gen_ai.usage.cost.* span attributes), or both
    semconv: Literal["v1.41", "development", "both"] = "v1.41"
    auth_token: str | None = None
    tls_cert_file: str | None = None  # serve /metrics over HTTPS
    tls_key_file: str | None = None
    max_connections: int = 16  # open connections to the metrics port; more get 503
    push: PushConfig = field(default_factory=PushConfig)

    def validate(self) -> None:
        _check_endpoint("metrics.endpoint", self.endpoint)
        self.push.validate()
        if self.max_connections < 1:
            raise ConfigError("metrics.max_connections must be >= 1")
        if self.max_series < 1:
            raise ConfigError("metrics.max_series must be >= 1")
        _check_tls_pair("metrics", self.tls_cert_file, self.tls_key_file)


def _check_transport(name: str, transport: str, plain: bool) -> None:
    """`grpc_transport: native` speaks plain HTTP/2 only, with the native helpers built."""
    from . import _native

    if transport != "native":
        return
    if not plain:
        raise ConfigError(f"{name} native has no TLS: use auto or grpcio")
    if _native.GrpcServer is None or _native.GrpcClient is None:
        raise ConfigError(
            f"{name} native: the native helpers are not built (scripts/setup.sh builds them)"
        )


def _check_tls_pair(name: str, cert: str | None, key: str | None) -> None:
    if bool(cert) != bool(key):
        raise ConfigError(f"{name}: tls_cert_file and tls_key_file go together")


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass
class ExporterConfig:
    protocol: Literal["grpc", "http", "file"] = "file"
    endpoint: str = ""  # grpc: HOST:PORT; http: base URL (…/v1/traces is appended)
    headers: dict[str, str] = field(default_factory=dict)
    insecure: bool = True
    timeout_s: float = 10.0
    compression: Compression = "gzip"
    # protocol grpc: "native" (native/src/grpc_client.rs), "grpcio", or "auto": native when
    # it is built and the channel is insecure (it speaks plain HTTP/2 only), grpcio otherwise.
    grpc_transport: Transport = "auto"

    def validate(self, name: str = "exporter") -> None:
        if self.protocol != "file" and not self.endpoint:
            raise ConfigError(f"{name}.endpoint is required for protocol {self.protocol}")
        if self.protocol == "grpc":
            _check_endpoint(f"{name}.endpoint", self.endpoint.removeprefix("http://"))
        if self.protocol == "http" and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"{name}.endpoint: expected an http(s):// URL")
        if self.timeout_s <= 0:
            raise ConfigError(f"{name}.timeout_s must be > 0")
        for key, value in self.headers.items():
            # an HTTP field name (a token) and a value without control characters: anything
            # else fails every export (grpcio) or the start (the native client)
            if not _HEADER_NAME.fullmatch(str(key)) or _HEADER_VALUE_BAD.search(str(value)):
                raise ConfigError(f"{name}.headers: {key!r} is not a valid header name and value")
        _check_transport(f"{name}.grpc_transport", self.grpc_transport, self.insecure)


@dataclass
class ExportersConfig:
    traces: ExporterConfig = field(default_factory=ExporterConfig)
    logs: ExporterConfig = field(default_factory=ExporterConfig)
    # Received metrics are passed through unchanged; with no destination they go to a file.
    metrics: ExporterConfig = field(default_factory=ExporterConfig)

    def validate(self) -> None:
        self.traces.validate("exporters.traces")
        self.logs.validate("exporters.logs")
        self.metrics.validate("exporters.metrics")


@dataclass
class QueueConfig:
    max_items: int = 200_000  # spans / log records / points waiting per signal
    # Payload bytes waiting in memory per signal (0 = no byte bound; a spool has its own):
    # what keeps the RSS bounded when a destination is down or slower than the senders.
    max_bytes: int = 32 * 1024 * 1024
    # Requests answered but not processed yet (processing runs after the answer): a full
    # backlog answers 503/UNAVAILABLE, so overload pushes back instead of growing memory.
    max_unprocessed_requests: int = 16
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    max_elapsed_s: float = 300.0  # give up on a batch after this (0 = never)
    shutdown_timeout_s: float = 10.0  # SIGTERM drains the queue for at most this long
    spool_directory: str | None = None  # on-disk spool that survives a restart
    spool_max_bytes: int = 1024 * 1024 * 1024  # per signal; a full spool answers 503
    spool_fsync_interval_s: float = 0.2  # 0 = fsync after every request

    def validate(self) -> None:
        if self.max_items < 1:
            raise ConfigError("queue.max_items must be >= 1")
        if self.max_bytes < 0 or 0 < self.max_bytes < 1024 * 1024:
            raise ConfigError("queue.max_bytes must be 0 (no byte bound) or >= 1 MiB")
        if self.max_unprocessed_requests < 1:
            raise ConfigError("queue.max_unprocessed_requests must be >= 1")
        if self.spool_max_bytes < 1024 * 1024:
            raise ConfigError("queue.spool_max_bytes must be >= 1 MiB")
        if self.spool_fsync_interval_s < 0:
            raise ConfigError("queue.spool_fsync_interval_s must be >= 0")
        if self.retry_initial_s <= 0 or self.retry_max_s < self.retry_initial_s:
            raise ConfigError("queue: need 0 < retry_initial_s <= retry_max_s")
        if self.max_elapsed_s < 0 or self.shutdown_timeout_s < 0:
            raise ConfigError("queue: timeouts must be >= 0")


@dataclass
class FileSinkConfig:
    directory: str = "./pipeline-data"
    max_bytes: int = 100 * 1024 * 1024  # rotate a file past this size
    max_files: int = 10  # rotated files kept per signal

    def validate(self) -> None:
        if self.max_bytes < 1024 or self.max_files < 1:
            raise ConfigError("file: max_bytes must be >= 1024 and max_files >= 1")


@dataclass
class Config:
    receivers: ReceiversConfig = field(default_factory=ReceiversConfig)
    metrics: MetricsEndpointConfig = field(default_factory=MetricsEndpointConfig)
    processors: list[str] = field(default_factory=lambda: list(DEFAULT_PROCESSORS))
    exporters: ExportersConfig = field(default_factory=ExportersConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    file: FileSinkConfig = field(default_factory=FileSinkConfig)
    price_overrides: dict[str, PriceOverride] = field(default_factory=dict)
    redact: RedactConfig = field(default_factory=RedactConfig)
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    # USD per call of a tool (gen_ai.tool.name), e.g. {web_search: 0.01}: the agents processor
    # adds it to llm_pipeline_tool_cost_usd_total for each tool span of that name
    tool_prices: dict[str, float] = field(default_factory=dict)
    # Attribution labels (tenant, user, ...) and per-request cost (processors/attribution.py)
    dimensions: list[DimensionConfig] = field(default_factory=list)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    log_level: str = "info"
    # Process-wide memory limiter (0 = off): above the soft limit (this percentage of the
    # limit) new requests get 503/UNAVAILABLE with a retry hint, before they are decoded.
    memory_limit_mib: int = 512
    memory_soft_limit_percent: int = 80
    # Spend limits for `llm-pipeline rules` (Prometheus rules; the sidecar itself ignores them)
    budgets: list[BudgetConfig] = field(default_factory=list)

    def dimension_labels(self) -> tuple[str, ...]:
        """Label names of the configured attribution dimensions (a budget may select on them)."""
        return tuple(d.name for d in self.dimensions)

    def validate(self) -> None:
        for name in ("receivers", "metrics", "exporters", "queue", "file"):
            getattr(self, name).validate()
        unknown = [p for p in self.processors if p not in KNOWN_PROCESSORS]
        if unknown:
            raise ConfigError(
                f"processors: unknown {unknown}; known: {', '.join(KNOWN_PROCESSORS)}"
            )
        if len(set(self.processors)) != len(self.processors):
            raise ConfigError("processors: each processor may appear once")
        if problem := order_problem(self.processors):
            raise ConfigError(f"processors: {problem}")
        for tool, price in self.tool_prices.items():
            if price != price or price < 0 or price == float("inf"):
                raise ConfigError(f"tool_prices.{tool} must be a finite number >= 0")
        if self.memory_limit_mib != 0 and self.memory_limit_mib < 128:
            raise ConfigError("memory_limit_mib must be 0 (off) or >= 128")
        if not 10 <= self.memory_soft_limit_percent <= 100:
            raise ConfigError("memory_soft_limit_percent must be between 10 and 100")
        for name in ("redact", "fallback", "dedupe", "attribution"):
            try:
                getattr(self, name).validate()
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from e
        try:
            CostConfig(self.price_overrides).validate()
            validate_budgets(self.budgets, self.dimension_labels())
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self._validate_dimensions()

    def _validate_dimensions(self) -> None:
        try:
            validate_dimensions(self.dimensions)
        except ValueError as e:
            raise ConfigError(f"dimensions{e}") from e
        attributing = self.dimensions or self.attribution.requests
        if attributing and "attribution" not in self.processors:
            raise ConfigError(
                "dimensions / attribution.requests need the attribution processor in processors"
            )


# Strict types and no unknown keys, in every dataclass reachable from Config; the YAML goes
# through JSON so that strict mode still takes its lists for tuples and sets.
_STRICT = pydantic.ConfigDict(strict=True, extra="forbid")
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false"}
_EXPECTED.update(string="a string", dict="a mapping", dataclass="a mapping")
_EXPECTED.update(dict.fromkeys(("list", "set", "tuple"), "a list"))


def _strict(tp: Any) -> None:
    if is_dataclass(tp) and "__pydantic_config__" not in vars(tp):
        type.__setattr__(tp, "__pydantic_config__", _STRICT)
        for hint in typing.get_type_hints(tp).values():
            _strict(hint)
    for arg in typing.get_args(tp):
        _strict(arg)


@functools.cache
def _adapter(cls: type) -> pydantic.TypeAdapter[Any]:
    _strict(cls)
    return pydantic.TypeAdapter(cls)


def _keys(data: Any, loc: tuple[int | str, ...]) -> list[int | str]:
    """The keys of an error location found in `data` (a union member's name is not)."""
    keys = []
    for part in loc:
        room = (
            data if isinstance(data, dict) else range(len(data)) if isinstance(data, list) else ()
        )
        if part in room:
            data = data[part]
            keys.append(part)
    return keys


def _message(cls: Any, data: Any, err: Any) -> str:
    """One pydantic error in our words: the key path, what was expected, what was given."""
    kind, got, keys = err["type"], err.get("input"), _keys(data, err["loc"])
    if kind.startswith("missing"):  # not in `data`: the key path ends with it
        keys.append(err["loc"][-1])
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".")
    if kind == "unexpected_keyword_argument":
        for k in keys[:-1]:  # the dataclass holding the key, for a "did you mean"
            cls = (
                typing.get_type_hints(cls)[str(k)]
                if is_dataclass(cls)
                else typing.get_args(cls)[-1]
            )
        names = [f.name for f in dataclasses.fields(cls)] if is_dataclass(cls) else []
        close = difflib.get_close_matches(str(keys[-1]), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {sorted(names)}"
        return f"{path.rpartition('.')[0] or 'config'}: unknown key(s) [{keys[-1]!r}]; {hint}"
    if kind == "literal_error":
        return f"{path}: expected {err['ctx']['expected'].replace(chr(39), '')}, got {got!r}"
    if kind.removesuffix("_type") in _EXPECTED:
        return f"{path or 'config'}: expected {_EXPECTED[kind[:-5]]}, got {got!r}"
    return f"{path or 'config'}: {err['msg'].lower()}"


def _numbers_as_strings(doc: Any, errors: list[Any]) -> bool:
    """YAML reads `X-Org: 123` as a number: where a string is expected it is taken as written."""
    numbers = [e for e in errors if e["type"] == "string_type" and type(e["input"]) in (int, float)]
    for err in numbers:
        *parents, key = _keys(doc, err["loc"])
        node = functools.reduce(operator.getitem, parents, doc)
        node[key] = str(node[key])
    return bool(numbers)


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from a YAML mapping, strictly typed, rejecting unknown keys."""
    doc = json.loads(json.dumps(data, default=str))
    while True:
        try:
            built: T = _adapter(typing.cast(type, cls)).validate_json(json.dumps(doc))
            return built
        except pydantic.ValidationError as e:
            errors = e.errors(include_url=False)
            if not _numbers_as_strings(doc, errors):
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                msg = _message(cls, doc, errors[0]) + more
                raise ConfigError(f"{path}.{msg}" if path else msg) from e


def load(path: str | Path | None) -> Config:
    """The validated config from a YAML file, or the embedded defaults when path is None."""
    if path is None:
        cfg = Config()
    else:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from e
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        cfg = from_dict(Config, data)
    cfg.validate()
    return cfg
