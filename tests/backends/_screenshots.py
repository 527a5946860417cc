"""Headless Chromium looks at the backends' own UIs (issue 17's browser check), where it is cheap.

Optional: does nothing when Debian's `chromium` is not installed (it is not a CI requirement and
setup does not install it). With it, the end-to-end run saves a screenshot of VictoriaLogs' UI
showing the followed trace's logs and of Prometheus' graph of a gen_ai query, under
``tests/backends/screenshots/`` (gitignored; ``LLM_PIPELINE_SCREENSHOTS`` overrides), and checks
the rendered page (``--dump-dom``) really shows that data, so a blank page does not pass.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

OUT_DIR = Path(os.environ.get("LLM_PIPELINE_SCREENSHOTS") or Path(__file__).parent / "screenshots")
BUDGET_MS = 15_000  # virtual time for the single-page apps to fetch and render


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(binary: str, url: str, action: list[str]) -> str:
    args = [
        binary,
        "--headless",
        "--no-sandbox",  # tests may run as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1400,1100",
        f"--virtual-time-budget={BUDGET_MS}",
        *action,
        url,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode} on {url}:\n{proc.stderr[-2000:]}")
    return proc.stdout


@dataclass
class Shot:
    url: str
    png: Path
    dom: str  # the rendered page's text, HTML entities resolved


def capture(binary: str, url: str, png: Path) -> Shot:
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(binary, url, [f"--screenshot={png}"])
    if not png.is_file() or png.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise RuntimeError(f"no PNG written for {url}")
    return Shot(url, png, html.unescape(_run(binary, url, ["--dump-dom"])))


def vmui_url(base: str, query: str) -> str:
    params = {"query": query, "g0.range_input": "15m", "g0.relative_time": "last_15_minutes"}
    return f"{base}/select/vmui/#/?{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"


def prometheus_graph_url(base: str, expr: str) -> str:
    params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1m", "g0.show_exemplars": "1"}
    return f"{base}/graph?{urllib.parse.urlencode(params)}"
