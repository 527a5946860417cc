"""`tool_prices`: USD per tool call, validated with the key named; the compose config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load

REPO = Path(__file__).resolve().parents[1]


def test_tool_prices_load(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("tool_prices: {web_search: 0.01, code_interpreter: 0.03}\n")
    assert load(p).tool_prices == {"web_search": 0.01, "code_interpreter": 0.03}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tool_prices: {web_search: -1}", "tool_prices.web_search"),
        ("tool_prices: {web_search: .inf}", "tool_prices.web_search"),
        ("tool_prices: {web_search: cheap}", "tool_prices.web_search"),
        ("tool_prices: [web_search]", "tool_prices"),
    ],
)
def test_bad_tool_prices_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load(p)


def test_the_compose_sidecar_config_prices_web_search() -> None:
    cfg = load(REPO / "compose" / "sidecar" / "config.yaml")
    assert cfg.tool_prices == {"web_search": 0.01}
    assert "agents" in cfg.processors and "serving" in cfg.processors
