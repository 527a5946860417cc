"""Agent runs through real agent instrumentations against the fake LLM server, in a subprocess.

    python -m tests.instrumentation.agent_runs SETUP BASE_URL OUT

writes the run's spans to OUT as one OTLP protobuf ExportTraceServiceRequest. Each setup sets
a global tracer provider (Traceloop.init) or patches a framework globally, so each runs in a
process of its own (`run` below starts it):

- `openllmetry`: Traceloop SDK (OpenLLMetry) `@workflow` -> `@agent` -> `@task` -> `@tool`
  decorators around an openai chat call instrumented by OpenLLMetry's openai instrumentation.
- `openinference`: the OpenAI Agents SDK (`openai-agents`) running an agent with one function
  tool on the fake server, traced by `openinference-instrumentation-openai-agents`. The fake
  answers every request offering tools with a tool call, so the agent stops on its first tool
  call (`tool_use_behavior="stop_on_first_tool"`): one model call and one tool call.
- `semconv`: the same agent traced by the OTel contrib instrumentation
  `opentelemetry-instrumentation-openai-agents-v2` (semantic-conventions GenAI spans:
  `invoke_agent`, `execute_tool`, `chat`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ROOT = Path(__file__).resolve().parents[2]
SETUPS = {
    "openllmetry": ["traceloop.sdk", "opentelemetry.instrumentation.openai", "openai"],
    "openinference": ["agents", "openinference.instrumentation.openai_agents", "openai"],
    "semconv": ["agents", "opentelemetry.instrumentation.openai_agents", "openai"],
}
MODEL = "gpt-4o-mini"
TOOL = "get_weather"
WORKFLOW = "trip"
AGENT = "planner"


def _encode(spans: list) -> bytes:  # type: ignore[type-arg]
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans).SerializeToString()  # type: ignore[no-any-return]


def _openllmetry(base_url: str) -> bytes:
    import openai
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import agent, task, tool, workflow
    from traceloop.sdk.instruments import Instruments

    exporter = InMemorySpanExporter()
    Traceloop.init(
        app_name="agents-openllmetry",
        exporter=exporter,
        disable_batch=True,
        telemetry_enabled=False,
        instruments={Instruments.OPENAI},
    )
    client = openai.OpenAI(base_url=base_url, api_key="sk-fake", max_retries=0, timeout=10)

    @tool(name=TOOL)
    def get_weather(city: str) -> str:
        return f"sunny in {city}"

    @task(name="pick")
    def pick() -> str:
        return get_weather("Paris")

    @agent(name=AGENT)
    def planner() -> str:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "plan a trip"}], max_tokens=4
        )
        return pick()

    @workflow(name=WORKFLOW)
    def trip() -> str:
        return planner()

    trip()
    return _encode(list(exporter.get_finished_spans()))


def _agents_run(base_url: str, instrument: Callable[[TracerProvider], None], service: str) -> bytes:
    """The OpenAI Agents SDK planner with one function tool, traced by `instrument`."""
    import openai
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(provider)
    set_tracing_disabled(False)
    os.environ.setdefault("OPENAI_API_KEY", "sk-fake")  # the SDK's own trace upload: never sent

    @function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        return f"sunny in {city}"

    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-fake", max_retries=0, timeout=10)
    planner = Agent(
        name=AGENT,
        instructions="Plan a trip.",
        model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
    )
    Runner.run_sync(planner, "plan a trip")
    provider.force_flush()
    return _encode(list(exporter.get_finished_spans()))


def _openinference(base_url: str) -> bytes:
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    def instrument(provider: TracerProvider) -> None:
        OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)

    return _agents_run(base_url, instrument, "agents-openinference")


def _semconv(base_url: str) -> bytes:
    from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor

    def instrument(provider: TracerProvider) -> None:
        # its spans only: the metrics it would record go to the global (no-op) meter provider
        OpenAIAgentsInstrumentor().instrument(tracer_provider=provider)

    return _agents_run(base_url, instrument, "agents-semconv")


def run(setup: str, base_url: str, out: Path) -> bytes:
    """Run `setup` in a subprocess; its spans as OTLP protobuf bytes."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH", "")))),
    }
    env["OPENAI_AGENTS_DISABLE_TRACING"] = "0"
    env["TRACELOOP_TELEMETRY"] = "false"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.instrumentation.agent_runs", setup, base_url, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{setup} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return out.read_bytes()


def main(argv: list[str]) -> int:
    setup, base_url, out = argv
    runs = {"openllmetry": _openllmetry, "openinference": _openinference, "semconv": _semconv}
    data = runs[setup](base_url)
    Path(out).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
