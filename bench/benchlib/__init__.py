"""Benchmark (bench/bench.py runs it): the sidecar against the otelcol-llm Collector on the same LLM span load.

What it does (all on loopback, all bounded in time):

1. Builds a pool of realistic 100-span OTLP/gRPC ExportTraceServiceRequest payloads with the
   demo's generator (`pipeline.demo.emit_into`, the real OTel SDK into an InMemorySpanExporter,
   encoded with the SDK's `encode_spans`), once, before any load, so the senders' CPU goes into
   sending. Every send rewrites the first 8 bytes of each trace id in place (offsets found once
   per payload), so no two sends carry the same (trace id, span id).
2. Starts a counting OTLP sink (its own process) and the system under test (SUT) pinned to one
   core (`--sut-core`, default 1): the sidecar (`python -m pipeline.cli run`, forwarding traces
   over OTLP/gRPC to the sink) or the Collector (`scripts/build-collector.sh`'s binary with
   `bench/collector-bench.yaml`: otlp receiver -> batch -> otlp_grpc exporter to the sink, plus
   span_metrics deriving the duration histogram, signal_to_metrics the token usage histogram).
3. Drives it with `--senders` sender processes pinned to the other core (`--load-core`,
   default 0), raw unary gRPC calls paced to a target rate, stepping the rate up until the
   accepted rate falls short of the offered rate (< 97%) or the p99 round trip exceeds
   `--p99-limit-ms`. Per step and system: accepted spans/s, CPU seconds of the SUT process
   (utime+stime from /proc/PID/stat, all threads) -> CPU us per span and utilisation, per-batch
   round-trip p50/p99 as the sender sees it ("added latency"), RSS and peak RSS (VmHWM), and the
   busy share of both cores from /proc/stat (to see noise from other processes and whether the
   load generator itself ran out of core).
4. Prints a table per system, the max sustained spans/s per core, and the ratio
   sidecar CPU us/span / Collector CPU us/span at a common moderate rate and at saturation.

Modes:
    python bench/bench.py                       # full ramp, sidecar + Collector (~6-8 min)
    python bench/bench.py --quick               # ~1 minute
    python bench/bench.py --systems sidecar,sidecar-passthrough,sidecar-min,collector
    python bench/bench.py --profile             # py-spy on the sidecar at --profile-rate
    python bench/bench.py --stages              # in-process CPU per stage of Service.accept
    python bench/bench.py --outage              # sink down --outage-seconds under steady load
    python bench/bench.py --json                # also write bench/results.json

`llm-pipeline bench ARGS` runs this file too. Figures are noisy when other work shares the
machine: the "core busy" columns show how much of each core was used by anything else.
"""
