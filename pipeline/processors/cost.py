"""cost: the USD price of each LLM call, from genai-prices (offline) or `price_overrides`.

genai-prices' own calculation costs ~100 µs a call, so prices are resolved once per
(provider, model) and kept as per-token rates; a call is priced from the rates when they are
plain or tiered token prices (genai-prices' `calc_unit_price` arithmetic, in floats), and by
genai-prices itself in any other case. Rates are re-resolved hourly (prices can have dates).
Priced by the response model (what was billed) when known, else the request model.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices

from ..model import LLMCall, TraceBatch

# `gen_ai.provider.name` -> genai-prices provider id; others are matched by model alone.
PROVIDER_IDS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "aws.bedrock": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "x_ai": "x-ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
}
# Significant digits a cost keeps: far below a billionth of a cent at any realistic price,
# and few enough that the float arithmetic's last-bit noise goes (0.00036, not
# 0.00035999999999999997, on the span and on /metrics).
COST_DIGITS = 12


def tidy(usd: float) -> float:
    """`usd` rounded to 12 decimals (below $1) or COST_DIGITS significant digits: the float
    nearest that short decimal, so its repr (what the OTLP JSON and the exposition print)
    carries no arithmetic noise. Below $1 by integer rounding (a third of the formatting's
    time; every priced call takes it): k / 1e12 is the double nearest the decimal k e-12."""
    if 0 <= usd < 1:
        return round(usd * 1e12) / 1e12
    return float(f"{usd:.{COST_DIGITS}g}")


_UNITS = ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok")
_REFRESH_S = 3600.0


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """USD per million tokens for a custom or fine-tuned model; wins over genai-prices."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None

    def price(self, call: LLMCall) -> float:
        inp = call.input_tokens or 0
        cr = call.cache_read_tokens or 0
        cw = call.cache_creation_tokens or 0
        cr_rate = (
            self.input_per_mtok if self.cache_read_per_mtok is None else self.cache_read_per_mtok
        )
        cw_rate = (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )
        uncached = max(0, inp - cr - cw)
        return (
            uncached * self.input_per_mtok
            + cr * cr_rate
            + cw * cw_rate
            + (call.output_tokens or 0) * self.output_per_mtok
        ) / 1e6


@dataclass(slots=True)
class _Rates:
    """A model's resolved price: per-unit token prices, or the ModelPrice for the slow path."""

    model_price: Any
    resolved_at: float
    # (per request, input, output, cache read, cache write per token) as floats, one tuple per
    # band of total input tokens between the tiers' starts (`thresholds`; one band when no
    # unit is tiered): priced without Decimal arithmetic (a float sum of a few products:
    # within 1e-15 relative of the Decimal result, far below a cent)
    bands: tuple[_Floats, ...]
    thresholds: tuple[int, ...]


_Floats = tuple[float, float | None, float | None, float | None, float | None]


def _unit_rate(price: Decimal | TieredPrices, total_input: int) -> Decimal:
    if isinstance(price, TieredPrices):
        for tier in reversed(price.tiers):
            if total_input > tier.start:
                return Decimal(tier.price)
        return Decimal(price.base)
    return price


def _floats(
    per_request: Decimal, units: dict[str, Decimal | TieredPrices | None], total_input: int
) -> _Floats:
    fin, fout, fcr, fcw = (
        None if u is None else float(_unit_rate(u, total_input)) / 1e6 for u in units.values()
    )
    return (float(per_request), fin, fout, fcr, fcw)


@dataclass
class CostConfig:
    price_overrides: dict[str, PriceOverride] = field(default_factory=dict)

    def validate(self) -> None:
        for model, o in self.price_overrides.items():
            rates = [
                o.input_per_mtok,
                o.output_per_mtok,
                o.cache_read_per_mtok,
                o.cache_write_per_mtok,
            ]
            if any(r is not None and (r != r or r < 0) for r in rates):
                raise ValueError(f"price_overrides.{model}: prices must be >= 0")


class CostProcessor:
    """Sets `LLMCall.cost_usd`; counts calls it could not price via `on_unpriced`, and calls
    whose pricing raised via `on_error` (such a call gets no cost; without `on_error` the
    error propagates)."""

    def __init__(
        self, config: CostConfig | None = None, on_unpriced: Any = None, on_error: Any = None
    ) -> None:
        self.config = config or CostConfig()
        self.config.validate()
        self._rates: dict[tuple[str, str], _Rates | None] = {}
        self._on_unpriced = on_unpriced
        self._on_error = on_error
        get_snapshot()  # load the price data now, not on the first span

    def _resolve(self, provider: str, model: str) -> _Rates | None:
        key = (provider, model)
        now = time.monotonic()
        if key in self._rates:
            cached = self._rates[key]
            if cached is None or now - cached.resolved_at < _REFRESH_S:
                return cached
        rates: _Rates | None
        try:
            _, info = get_snapshot().find_provider_model(
                model, None, PROVIDER_IDS.get(provider), None
            )
            mp = info.get_prices(datetime.now(tz=UTC))
        except LookupError:
            rates = None
        else:
            fields = {k: v for k, v in vars(mp).items() if not k.startswith("_") and v is not None}
            per_request = fields.pop("requests_kcount", Decimal(0)) / 1000
            units = {u: fields.pop(u, None) for u in _UNITS}
            # Units left in `fields` (audio, web searches, ...) are never in our usage: zero.
            # A tier applies when the input exceeds its start (an int): inputs in one band
            # between the sorted starts get the same rates, those of its lowest input.
            starts = sorted(
                {t.start for u in units.values() if isinstance(u, TieredPrices) for t in u.tiers}
            )
            bands = tuple(
                _floats(per_request, units, lowest) for lowest in (0, *(t + 1 for t in starts))
            )
            rates = _Rates(mp, now, bands, tuple(starts))
        if len(self._rates) > 10_000:  # a flood of unique model names must not grow memory
            self._rates.clear()
        self._rates[key] = rates
        return rates

    def price(self, call: LLMCall) -> float | None:
        """USD for the call, or None when neither an override nor genai-prices knows it."""
        resp, req = call.response_model, call.request_model
        models = (resp, req) if resp and req else (resp,) if resp else (req,) if req else ()
        overrides = self.config.price_overrides
        for m in models if overrides else ():
            override = overrides.get(m)
            if override is not None:
                return override.price(call)
        for m in models:
            rates = self._resolve(call.provider, m)
            if rates is not None:
                return self._price_with(rates, call)
        return None

    def savings(self, call: LLMCall) -> float | None:
        """USD the call's cache reads saved against the input price, by the same source as
        `price` (an override, else genai-prices' rates); None without cache reads or a
        cache-read price."""
        cr = call.cache_read_tokens
        if not cr:
            return None
        resp, req = call.response_model, call.request_model
        models = (resp, req) if resp and req else (resp,) if resp else (req,) if req else ()
        overrides = self.config.price_overrides
        for m in models if overrides else ():
            o = overrides.get(m)
            if o is not None:
                if o.cache_read_per_mtok is None:
                    return 0.0  # cache reads billed as input: nothing saved
                return max(0.0, o.input_per_mtok - o.cache_read_per_mtok) * cr / 1e6
        for m in models:
            rates = self._resolve(call.provider, m)
            if rates is not None:
                t = rates.thresholds
                _, fin, _, fcr, _ = rates.bands[bisect_left(t, call.input_tokens or 0) if t else 0]
                if fin is None or fcr is None:
                    return None
                return max(0.0, fin - fcr) * cr
        return None

    @staticmethod
    def _price_with(rates: _Rates, call: LLMCall) -> float:
        inp = call.input_tokens or 0
        out = call.output_tokens or 0
        cr = call.cache_read_tokens or 0
        cw = call.cache_creation_tokens or 0
        t = rates.thresholds
        per_request, fin, fout, fcr, fcw = rates.bands[bisect_left(t, inp) if t else 0]
        if (
            (fin is not None or inp == 0)
            and (fout is not None or out == 0)
            and (fcr is not None or cr == 0)
            and (fcw is not None or cw == 0)
            and inp >= cr + cw
        ):
            usd = per_request
            if fin is not None:
                usd += fin * (inp - cr - cw)
            if fout is not None:
                usd += fout * out
            if fcr is not None:
                usd += fcr * cr
            if fcw is not None:
                usd += fcw * cw
            return usd
        # a unit this usage needs has no token price (or more cached than input tokens):
        # genai-prices decides
        usage = Usage(
            input_tokens=inp,
            output_tokens=out,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
        )
        return float(rates.model_price.calc_price(usage)["total_price"])

    def __call__(self, batch: TraceBatch) -> TraceBatch:
        for call in batch.calls:
            if call.input_tokens is None and call.output_tokens is None:
                continue
            reported = call.cost_usd  # e.g. LiteLLM's gen_ai.cost.*: used only as a last resort
            try:
                price = self.price(call)
            except Exception as e:  # one call's odd usage must not cost the others theirs
                if self._on_error is None:
                    raise
                self._on_error(call, e)
                continue
            if price is not None:
                call.cost_usd = tidy(price)
                if call.cache_read_tokens and (saved := self.savings(call)) is not None:
                    call.cache_savings_usd = tidy(saved)
            elif reported is None and self._on_unpriced is not None:
                self._on_unpriced(call)
        return batch
