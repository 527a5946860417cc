"""Subprocess entry point: run a setup's scenarios, write each one's spans as OTLP protobuf.

    python -m tests.instrumentation.runner SETUP BASE_URL OUT.json [SCENARIO ...]

OUT.json maps each scenario to {"otlp": base64 of an ExportTraceServiceRequest encoded by the
OTel SDK exporter's own encoder, "error": the exception type the client raised, or ""}.
One process per setup: instrumentors of one client conflict when several patch it in turn.
`capture()` runs this from a test and decodes the result.

    python -m tests.instrumentation.runner --record SETUP LABEL OUT.json

records a fixture (tests/testdata/conventions/): starts a fake LLM server, runs every scenario
and writes one OTLP/JSON request, each scenario's spans under a resource with the attributes
`test.scenario` and `test.library` (LABEL, e.g. "opentelemetry-instrumentation-openai==0.53.0").
Run it with an interpreter that has the library version to record (a venv).

    python -m tests.instrumentation.runner --otlp ENDPOINT SETUP BASE_URL [SCENARIO ...]

sends the spans over OTLP/HTTP to ENDPOINT (e.g. a running sidecar's
http://127.0.0.1:4318/v1/traces) instead, for end-to-end runs; it prints the client errors
per scenario as JSON.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    setup, base_url, out = argv[0], argv[1], argv[2]
    # Environment switches must be set before the libraries are imported.
    from tests.instrumentation.scenarios import SETUPS, scenarios_for

    for k, v in SETUPS[setup].env.items():
        os.environ.setdefault(k, v)

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tests.instrumentation.scenarios import instrumented, run_scenario

    names = argv[3:] or scenarios_for(setup)
    exporter = InMemorySpanExporter()
    result: dict[str, dict[str, str]] = {}
    with instrumented(setup, exporter) as session:
        for name in names:
            session.last_error = ""
            run_scenario(session, name, base_url)
            spans = exporter.get_finished_spans()
            exporter.clear()
            otlp = encode_spans(spans).SerializeToString()
            result[name] = {
                "otlp": base64.b64encode(otlp).decode(),
                "error": session.last_error,
            }
    Path(out).write_text(json.dumps(result))
    return 0


def export_otlp(endpoint: str, setup: str, base_url: str, names: list[str]) -> int:
    from tests.instrumentation.scenarios import SETUPS, scenarios_for

    for k, v in SETUPS[setup].env.items():
        os.environ.setdefault(k, v)

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from tests.instrumentation.scenarios import instrumented, run_scenario

    errors: dict[str, str] = {}
    with instrumented(setup, OTLPSpanExporter(endpoint=endpoint)) as session:
        for name in names or scenarios_for(setup):
            session.last_error = ""
            run_scenario(session, name, base_url)
            errors[name] = session.last_error
    print(json.dumps(errors))
    return 0


def record(setup: str, label: str, out: str) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from pipeline.receivers.decode import to_json
    from tests.fakellm import FakeLLM

    merged = ExportTraceServiceRequest()
    with FakeLLM() as llm, tempfile.TemporaryDirectory() as tmp:
        for scenario, (raw, _) in capture(setup, llm.base_url, Path(tmp)).items():
            req = ExportTraceServiceRequest.FromString(raw)
            for rs in req.resource_spans:
                for k, v in (("test.scenario", scenario), ("test.library", label)):
                    rs.resource.attributes.append(KeyValue(key=k))
                    rs.resource.attributes[-1].value.string_value = v
                merged.resource_spans.append(rs)
    text = json.dumps(json.loads(to_json(merged)), indent=1, sort_keys=True)
    Path(out).write_text(text + "\n")
    return 0


def capture(
    setup: str, base_url: str, tmp_dir: Path, scenarios: list[str] | None = None
) -> dict[str, tuple[bytes, str]]:
    """Run `setup` in a subprocess; scenario -> (OTLP protobuf bytes, client error type)."""
    from tests.instrumentation.scenarios import SETUPS

    out = tmp_dir / f"{setup.replace('+', '_')}.json"
    env = {**os.environ, **SETUPS[setup].env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    for k in ("OTEL_SEMCONV_STABILITY_OPT_IN",):  # only the setup's own switches
        if k not in SETUPS[setup].env:
            env.pop(k, None)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tests.instrumentation.runner"),
            *(setup, base_url, str(out), *(scenarios or [])),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a loaded 2-core machine: LiteLLM alone has taken 150 s
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"runner for {setup} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    data = json.loads(out.read_text())
    return {k: (base64.b64decode(v["otlp"]), v["error"]) for k, v in data.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--record"]:
        sys.exit(record(*sys.argv[2:5]))
    if sys.argv[1:2] == ["--otlp"]:
        sys.exit(export_otlp(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]))
    sys.exit(main(sys.argv[1:]))
