#!/usr/bin/env python3
"""Compatibility check (not part of CI): the newest release of each supported instrumentation,
driven against the fake LLM server and read by the sidecar's processors.

    PYTHONPATH=$PWD python3 scripts/compat.py [--keep DIR] [--only openllmetry ...]

For each library it makes a throwaway venv (Python's own `venv`, no system packages), installs
the newest release from PyPI with pip (plus the OpenTelemetry SDK the runner needs), runs
tests/instrumentation/runner.py's scenarios in it against tests/fakellm.py, reads the spans
with normalize -> dedupe -> ttft here and prints one table row per setup: the versions pip
resolved and what was read, checked against the values the fake server answers
(tests/instrumentation/scenarios.py). `--spec NAME=REQ` replaces a requirement (e.g.
`--spec openai_v2='opentelemetry-util-genai<1'`) to find the install line that works.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakellm import FakeLLM  # noqa: E402
from tests.instrumentation import scenarios as sc  # noqa: E402
from tests.instrumentation.otlp import run_chain  # noqa: E402

# What the runner itself imports (the SDK, its in-memory exporter and the OTLP encoder).
_BASE = ["opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-common"]


@dataclass
class Library:
    requirements: list[str]  # the newest release of each, unless pinned here
    setups: list[str]  # scenarios.SETUPS run in its venv
    shown: list[str]  # the distributions whose versions the table shows
    extra: list[str] = field(default_factory=list)


LIBRARIES: dict[str, Library] = {
    "openai_v2": Library(
        # Only pre-releases exist: a pre-release specifier lets pip pick them for it alone.
        ["opentelemetry-instrumentation-openai-v2>=2.0b0", "opentelemetry-util-genai", "openai"],
        ["openai_v2", "openai_v2_latest"],
        ["opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai", "openai"],
    ),
    "openllmetry": Library(
        ["opentelemetry-instrumentation-openai", "openai"],
        ["openllmetry"],
        ["opentelemetry-instrumentation-openai", "openai"],
    ),
    "openinference": Library(
        ["openinference-instrumentation-openai", "openai"],
        ["openinference"],
        ["openinference-instrumentation-openai", "openai"],
    ),
    "litellm": Library(
        ["litellm!=1.107.0", "openai"],  # 1.107.0 on PyPI was compromised
        ["litellm", "litellm_latest"],
        ["litellm", "openai"],
    ),
}


def _pip(python: Path, args: list[str], log: Path) -> bool:
    with log.open("a") as out:
        proc = subprocess.run(
            [str(python), "-m", "pip", "--disable-pip-version-check", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=1200,
        )
    return proc.returncode == 0


def _versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import json,sys\nfrom importlib.metadata import version, PackageNotFoundError\n"
        "out={}\nfor n in sys.argv[1:]:\n"
        "    try: out[n]=version(n)\n    except PackageNotFoundError: out[n]='-'\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, check=True
    )
    return dict(json.loads(proc.stdout))


def _run(python: Path, setup: str, base_url: str, out: Path) -> tuple[dict[str, bytes], str]:
    env = {**os.environ, **sc.SETUPS[setup].env, "PYTHONPATH": str(ROOT)}
    if "OTEL_SEMCONV_STABILITY_OPT_IN" not in sc.SETUPS[setup].env:
        env.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
    proc = subprocess.run(
        [str(python), "-m", "tests.instrumentation.runner", setup, base_url, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {}, (lines[-1] if lines else f"exit {proc.returncode}")[:100]
    data = json.loads(out.read_text())
    return {k: base64.b64decode(v["otlp"]) for k, v in data.items()}, ""


# What a library does not write at all (README's table): shown as "not written", not a failure.
_NOT_WRITTEN = {
    "openai_v2": {"cache read", "stream TTFT"},
    "openai_v2_latest": {"cache read", "stream TTFT"},
    "litellm": {"cache read", "stream TTFT"},
    "litellm_latest": {"cache read", "stream TTFT"},
}


def _check(setup: str, raw: dict[str, bytes]) -> dict[str, str]:
    """Scenario checks -> "ok" or what was read instead."""
    result: dict[str, str] = {}

    def calls(name: str) -> list:  # type: ignore[type-arg]
        return run_chain(raw[name]).calls if name in raw else []

    chat = [c for c in calls("chat") if c.counted]
    got = [(c.input_tokens, c.output_tokens) for c in chat]
    want = [(sc.PROMPT_TOKENS, sc.CHAT_OUTPUT_TOKENS)]
    result["chat tokens"] = "ok" if got == want else f"got {got}"
    cache = [c.cache_read_tokens for c in chat]
    result["cache read"] = "ok" if cache == [sc.CACHED_TOKENS] else f"got {cache}"
    stream = [c for c in calls("stream") if c.counted]
    ttft = [c.ttft_s for c in stream]
    ok_ttft = len(ttft) == 1 and ttft[0] is not None and ttft[0] > sc.FIRST_CHUNK_DELAY_S
    result["stream TTFT"] = "ok" if ok_ttft else f"got {[t and round(t, 3) for t in ttft]}"
    err = [c.error_type for c in calls("error_429") if c.counted]
    result["errors"] = "ok" if err and all(err) else f"got {err}"
    emb = [c.input_tokens for c in calls("embeddings") if c.counted]
    result["embeddings"] = "ok" if emb == [sc.EMBED_TOKENS] else f"got {emb}"
    for col in _NOT_WRITTEN.get(setup, ()):
        if result[col] != "ok":
            result[col] = "not written (as tested)"
    return result


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", help="make the venvs under this directory and keep them")
    ap.add_argument("--only", nargs="*", choices=sorted(LIBRARIES), default=sorted(LIBRARIES))
    ap.add_argument("--spec", action="append", default=[], help="LIB=REQUIREMENT, repeatable")
    args = ap.parse_args(argv)
    extra: dict[str, list[str]] = {}
    for s in args.spec:
        lib, _, req = s.partition("=")
        extra.setdefault(lib, []).append(req)

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="llm-compat-"))
    base.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, dict[str, str], str]] = []
    with FakeLLM() as llm:
        for name in args.only:
            lib = LIBRARIES[name]
            env_dir = base / name
            log = base / f"{name}.pip.log"
            if not (env_dir / "bin" / "python").exists():
                venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
            python = env_dir / "bin" / "python"
            reqs = [*_BASE, *lib.requirements]
            for r in extra.get(name, []):  # a spec replaces the requirement of its name
                key = r.split("<")[0].split(">")[0].split("=")[0].split("!")[0].strip()
                reqs = [q for q in reqs if not q.startswith(key)] + [r]
            print(f"{name}: pip install -U {' '.join(reqs)}", file=sys.stderr, flush=True)
            if not _pip(python, ["install", "-q", "-U", *reqs], log):
                rows.append((name, "-", {}, f"pip failed, see {log}"))
                continue
            versions = _versions(python, lib.shown)
            shown = ", ".join(f"{k} {v}" for k, v in versions.items())
            for setup in lib.setups:
                raw, error = _run(python, setup, llm.base_url, base / f"{setup}.json")
                rows.append((setup, shown, _check(setup, raw) if raw else {}, error))
    cols = ["chat tokens", "cache read", "stream TTFT", "errors", "embeddings"]
    print("| setup | versions (newest resolved by pip) | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for setup, shown, checks, error in rows:
        cells = (
            [checks.get(c, "-") for c in cols]
            if checks
            else [f"FAILED: {error}"] + ["-"] * (len(cols) - 1)
        )
        print(f"| {setup} | {shown} | " + " | ".join(cells) + " |")
    if not args.keep:
        print(f"(venvs in {base}; delete when done)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
