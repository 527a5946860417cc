"""A real Prometheus (Debian's package) on a free port, scraping what the test says.

The server itself is `tests.stack._prom.PrometheusServer` (process, readiness, HTTP API); this
only writes the small scrape config the end-to-end tests need.
"""

from __future__ import annotations

from pathlib import Path

from tests.stack._prom import PrometheusServer


def start_prometheus(
    tmp: Path, targets: dict[str, str | list[str]], rule_files: list[str] | None = None
) -> PrometheusServer:
    """Scrape each job -> 'host:port' (or a list of them) every second, exemplar storage on."""
    cfg: dict[str, object] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [t] if isinstance(t, str) else t}]}
            for job, t in targets.items()
        ],
    }
    if rule_files:
        cfg["rule_files"] = rule_files
    return PrometheusServer(tmp, cfg).start()
