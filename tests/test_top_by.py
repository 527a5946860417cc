"""`llm-pipeline top --by DIMENSION`: rows by service and an attribution label, from two
expositions written here (the dimension labels come from the sidecar's `dimensions:`)."""

from __future__ import annotations

import subprocess
import sys

from rich.console import Console

from pipeline import top


def _exposition(scale: float) -> str:
    """Cost and tokens by tenant; the duration histogram has no tenant (as by default)."""
    lines = [
        "# TYPE gen_ai_client_cost_usd counter",
        "# TYPE gen_ai_client_tokens counter",
        "# TYPE gen_ai_client_operation_duration_seconds histogram",
    ]
    for svc, tenant, usd, tokens in (
        ("chat", "acme", 3.0, 3000),
        ("chat", "globex", 0.5, 400),
        ("rag", "acme", 1.0, 2000),
        ("chat", "__other__", 0.25, 100),
    ):
        lb = f'service_name="{svc}",gen_ai_request_model="m",tenant="{tenant}"'
        lines.append(f"gen_ai_client_cost_usd_total{{{lb}}} {usd * scale}")
        for kind in ("input", "output"):
            lines.append(
                f'gen_ai_client_tokens_total{{{lb},gen_ai_token_type="{kind}"}} {tokens * scale}'
            )
    d = 'service_name="chat",gen_ai_request_model="m",error_type=""'
    lines.append(f'gen_ai_client_operation_duration_seconds_bucket{{{d},le="+Inf"}} {10 * scale}')
    lines.append(f"gen_ai_client_operation_duration_seconds_count{{{d}}} {10 * scale}")
    lines.append(f"gen_ai_client_operation_duration_seconds_sum{{{d}}} {scale}")
    return "\n".join(lines) + "\n# EOF\n"


def test_rows_by_tenant() -> None:
    old = top.parse(_exposition(1.0), 100.0, by="tenant")
    new = top.parse(_exposition(3.0), 110.0, by="tenant")  # 10 s later, everything tripled
    rows = {(r.service, r.model): r for r in top.rows(old, new)}
    assert set(rows) == {
        ("chat", "acme"),
        ("chat", "globex"),
        ("rag", "acme"),
        ("chat", "__other__"),
    }
    acme = rows["chat", "acme"]
    assert acme.cost_h == (9.0 - 3.0) / 10 * 3600
    assert acme.tokens_s == 2 * (9000 - 3000) / 10
    assert acme.cost_total == 9.0
    assert acme.calls_s == 0 and acme.lat_p50 is None  # latency carries no tenant
    assert rows["chat", "globex"].cost_h == 1.0 / 10 * 3600
    # without --by: one row per (service, model), the tenants summed
    plain = {
        (r.service, r.model): r
        for r in top.rows(top.parse(_exposition(1.0), 100.0), top.parse(_exposition(3.0), 110.0))
    }
    assert plain["chat", "m"].cost_total == 3 * (3.0 + 0.5 + 0.25)
    assert plain["chat", "m"].calls_s == 2.0


def test_render_names_the_dimension_column() -> None:
    old = top.parse(_exposition(1.0), 0.0, by="tenant")
    new = top.parse(_exposition(2.0), 5.0, by="tenant")
    console = Console(width=200, record=True)
    view = top.render("u", top.rows(old, new), top.health(old, new), "total", by="tenant")
    console.print(view)
    text = console.export_text()
    assert "tenant" in text and "globex" in text and "model" not in text.split("\n")[2]


def test_cli_rejects_a_bad_dimension() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "top", "--once", "--by", "ten ant"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "--by" in r.stderr
