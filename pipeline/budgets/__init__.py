"""Budgets: spend limits turned into Prometheus rules and their promtool tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from . import promtests, rules
from .config import BudgetConfig

__all__ = ["BudgetConfig", "promtest_paths", "write"]


def promtest_paths(out: Path, tests_dir: Path | None = None) -> dict[str, Path]:
    """Where the promtool tests of rule file `out` go: <dir>/tests/<stem>[-kind].test.yml."""
    d = tests_dir or out.parent / "tests"
    return {
        kind: d / (f"{out.stem}.test.yml" if kind == "main" else f"{out.stem}-{kind}.test.yml")
        for kind in ("main", "anomaly", "boundaries")
    }


def write(
    budgets: list[BudgetConfig],
    out: Path,
    source: str,
    at: datetime | None = None,
    tests_dir: Path | None = None,
) -> list[Path]:
    """Write the rule file and, beside it, its promtool tests; the paths written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rules.render(budgets, source, at))
    written = [out]
    paths = promtest_paths(out, tests_dir)
    if not budgets:
        return written
    docs = promtests.generate(budgets, "", at)
    for kind, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        rel = Path(_relpath(out, path.parent))
        docs[kind]["rule_files"] = [str(rel)]
        head = f"# Generated with {out.name} by `llm-pipeline rules`: promtool test rules {path.name}\n"
        path.write_text(head + rules.dump(docs[kind]))
        written.append(path)
    return written


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target.resolve(), start.resolve())
