#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder: `python3 dashboards/build.py`.

The JSON files are what Grafana provisions (compose/grafana/provisioning/dashboards); the board
modules are their source, so edit there and regenerate (tests/stack checks the JSON is up to
date). Every query is written against the metric reference in README.md and the recording rules
in dashboards/rules/llm-recording.yml. Panels whose series legitimately do not exist on a healthy
system (rejections, drops, overflow, fallbacks...) end in `or on() vector(0)`, so they show 0
rather than "No data" (and tests/stack/test_dashboard_queries.py can require every query to
return something).

A new board: a module beside this one with `FILE` (the JSON's name) and `build()` (the
dashboard), built from `panels`, and added to `BOARDS` below.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import agents_board
import cost_explorer
import llm_overview
import pipeline_health

HERE = Path(__file__).resolve().parent
BOARDS: tuple[ModuleType, ...] = (llm_overview, pipeline_health, agents_board, cost_explorer)


def render(board: ModuleType) -> str:
    return json.dumps(board.build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for board in BOARDS:
        path = HERE / board.FILE
        text = render(board)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(board.FILE)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python3 dashboards/build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
