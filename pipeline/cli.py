"""llm-pipeline run | demo | top | validate | rules | bench."""

from __future__ import annotations

import argparse
import gc
import re
import signal
import sys
import threading
from typing import Any

import structlog

from .config import ConfigError, load
from .telemetry import configure_logging


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"llm-pipeline: invalid config: {e}", file=sys.stderr)
        return 2
    if args.otlp_grpc is not None:
        cfg.receivers.grpc_endpoint = args.otlp_grpc
    if args.otlp_http is not None:
        cfg.receivers.http_endpoint = args.otlp_http
    if args.metrics is not None:
        cfg.metrics.endpoint = args.metrics
    try:
        cfg.validate()
    except ConfigError as e:
        print(f"llm-pipeline: invalid config: {e}", file=sys.stderr)
        return 2
    configure_logging(cfg.log_level, json=args.log_json)
    from .sidecar import Sidecar

    try:
        sidecar = Sidecar(cfg)
    except OSError as e:
        print(f"llm-pipeline: cannot start: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        structlog.get_logger("pipeline").info("signal received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The receivers' threads need the GIL for a few hundred µs per request; with CPython's
    # default 5 ms switch interval, a busy processing thread makes each of them wait up to 5 ms
    # at every hand-over (measured: p99 per batch 9-25 ms -> 3-9 ms at 10-20k spans/s).
    sys.setswitchinterval(0.0005)
    # What was built at start (modules, the price snapshot) is never garbage: keep the cyclic
    # collector from walking it again at every full collection.
    gc.freeze()
    sidecar.start()
    if cfg.exporters.traces.protocol == "file":
        structlog.get_logger("pipeline").info(
            "where to look",
            metrics=sidecar.addresses().get("metrics", ""),
            traces_file=sidecar.service.destinations()["traces"],
            demo="llm-pipeline demo  # sends LLM traffic here",
        )
    while not stop.wait(0.5):
        pass
    sidecar.shutdown()
    return 0


def _demo(args: argparse.Namespace) -> int:
    configure_logging("info")
    try:
        from .demo import run_demo
    except ImportError as e:  # the OpenTelemetry SDK is the [demo] extra
        print(
            f"llm-pipeline demo needs the OpenTelemetry SDK ({e.name or e} is missing): "
            "pip install 'llm-otel-pipeline[demo]'",
            file=sys.stderr,
        )
        return 2
    try:
        stats = run_demo(
            endpoint=args.endpoint,
            rate=args.rate,
            duration=args.duration,
            protocol=args.protocol,
            seed=args.seed,
            services=args.services.split(",") if args.services else None,
            logs=not args.no_logs,
            agents=not args.no_agents,
        )
    except ValueError as e:
        print(f"llm-pipeline demo: {e}", file=sys.stderr)
        return 2
    structlog.get_logger("pipeline.demo").info("demo finished", **_summary(stats))
    return 0


def _summary(stats: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in ("spans", "log_records", "requests", "llm_calls", "errors", "fallbacks", "retries"):
        v = getattr(stats, k, None)
        if v is not None:
            out[k] = v if not isinstance(v, dict) else sum(v.values())
    return out


def _top(args: argparse.Namespace) -> int:
    from .top import SORT_KEYS, run

    if args.sort not in SORT_KEYS:
        print(f"llm-pipeline top: --sort is one of {', '.join(SORT_KEYS)}", file=sys.stderr)
        return 2
    if args.by and not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", args.by):
        print("llm-pipeline top: --by takes a label name (tenant, user, ...)", file=sys.stderr)
        return 2
    return run(args.metrics, args.interval, args.sort, args.once, by=args.by)


def _validate(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"llm-pipeline: invalid config: {e}", file=sys.stderr)
        return 2
    print(f"{args.config}: ok (processors: {', '.join(cfg.processors)})")
    return 0


def _rules(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from .budgets import rules as budget_rules
    from .budgets import write

    try:
        cfg = load(args.config)
        at = datetime.fromisoformat(args.at) if args.at else None
    except (ConfigError, ValueError) as e:
        print(f"llm-pipeline: invalid config: {e}", file=sys.stderr)
        return 2
    if at is not None and at.tzinfo is None:
        print("llm-pipeline rules: --at needs a UTC offset (…Z or +00:00)", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(budget_rules.render(cfg.budgets, args.config, at))
        return 0
    for path in write(cfg.budgets, Path(args.output), args.config, at):
        print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
    if not script.exists():
        print("llm-pipeline: bench/bench.py is only in a source checkout", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the sidecar")
    r.add_argument("--config", help="YAML config (default: embedded defaults)")
    r.add_argument("--otlp-grpc", metavar="HOST:PORT", help="default 127.0.0.1:4317")
    r.add_argument("--otlp-http", metavar="HOST:PORT", help="default 127.0.0.1:4318")
    r.add_argument("--metrics", metavar="HOST:PORT", help="default 127.0.0.1:9464")
    r.add_argument("--log-json", action="store_true", help="JSON log lines")
    r.set_defaults(func=_run)
    d = sub.add_parser("demo", help="send realistic LLM traffic through the OTel SDK")
    d.add_argument("--endpoint", default="http://127.0.0.1:4317")
    d.add_argument("--rate", type=float, default=5.0, help="requests per second")
    d.add_argument("--duration", type=float, default=30.0, help="seconds (0 = until Ctrl-C)")
    d.add_argument("--protocol", choices=["grpc", "http/protobuf"], default=None)
    d.add_argument("--seed", type=int, default=None)
    d.add_argument(
        "--services", help="comma-separated: chat-api,rag-worker,support-bot (default all)"
    )
    d.add_argument("--no-logs", action="store_true", help="spans only, no log records")
    d.add_argument(
        "--no-agents",
        action="store_true",
        help="no agent runs (tools, evaluations, vLLM server spans) beside the request mix",
    )
    d.set_defaults(func=_demo)
    t = sub.add_parser("top", help="a live terminal view of a sidecar's /metrics")
    t.add_argument("--metrics", default="http://127.0.0.1:9464/metrics", metavar="URL")
    t.add_argument("--interval", type=float, default=1.5, help="seconds between scrapes")
    t.add_argument(
        "--sort", default="calls", help="calls tokens cost total ttft latency errors fallbacks"
    )
    t.add_argument("--once", action="store_true", help="print one screen (two scrapes) and exit")
    t.add_argument(
        "--by", default="", metavar="DIMENSION", help="rows by service and this label (tenant, ...)"
    )
    t.set_defaults(func=_top)
    v = sub.add_parser("validate", help="check a config file")
    v.add_argument("--config", required=True)
    v.set_defaults(func=_validate)
    rl = sub.add_parser(
        "rules", help="write Prometheus rules (and their promtool tests) for the budgets"
    )
    rl.add_argument("--config", required=True)
    rl.add_argument(
        "-o",
        "--output",
        help="rule file; its promtool tests go to tests/ beside it (default: stdout)",
    )
    rl.add_argument("--at", help="generate as of this ISO time (default now): the zones' offsets")
    rl.set_defaults(func=_rules)
    b = sub.add_parser("bench", help="run the benchmark (source checkout)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # everything after it belongs to the script, in order
        rest = argv[1:]
        return _bench(argparse.Namespace(rest=rest[1:] if rest[:1] == ["--"] else rest))
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
