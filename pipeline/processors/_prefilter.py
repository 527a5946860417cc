"""The redaction prefilter: which spans / log records of a serialized request can hold a match.

Walking every string of every span in Python costs far more than the scan itself, and most
spans hold nothing to redact. So the request's bytes are searched first, with one regex per
type that matches wherever the type's real pattern (pipeline.processors.redact) can match, and
only the items those hits fall in are walked. The search runs in the native scanner when it
is built (`_native`), else with `re`, in C too.

Each hint is the real pattern with what only narrows it left out: the boundary lookarounds
(around a string on the wire sit length and tag bytes, which may look like word characters),
upper bounds on repeats (a non-ASCII character is one `str` character but several bytes), and
the parts before a necessary literal. Every hint starts with a literal, which `re` finds with a
fast substring search (a pattern starting with a character class or an alternation is tried at
every position: ten times slower). Most hints run over a folded copy of the request, letters
lowercased and every digit mapped to `0`, so `Bearer`/`BEARER`, `api_key`/`API_KEY` and every
phone and card number start with one literal each. A hint may match more than the real
pattern (binary bytes, dates), never less: a false hit only costs the walk of that one item.
"""

from __future__ import annotations

import bisect
import re

from .._native import HintScanner, trace_targets
from ._wire import ItemRange, item_ranges

# A card number as `is_card_number` accepts it: 13+ digits, the first four contiguous.
_CARD = rb"0000(?:[ \-]?0){9}"
_NANP = rb"000[ .\-]000[ .\-]0000"  # (415) 555-0123 without the parentheses, 415.555.0123


def _merged(literal: bytes, *hints: bytes) -> bytes:
    """One regex for hints that all start with `literal`: the literal, then either rest."""
    assert all(h.startswith(literal) for h in hints)
    return literal + b"(?:" + b"|".join(h[len(literal) :] for h in hints) + b")"


# Over the folded copy (A-Z -> a-z, 1-9 -> 0).
_FOLDED_HINTS: dict[str, tuple[bytes, ...]] = {
    "url_password": (rb"://[^\s/?#@:\"'\\]*:[^\s/?#\"'\\]+@",),
    "api_key": (
        rb"sk-[a-z0-9_\-]{20}",
        rb"g(?:h[pousr]_[a-z0-9]{36}|ithub_pat_[a-z0-9_]{22})",
        # api_key= / Api-Key: / API_KEY= (the `a` before it left out: a literal start)
        rb"pi[_\-]?key[\"']?\s*[:=]\s*[\"']?[a-z0-9_\-.~+/=]{8}",
    ),
    "bearer_token": (rb"earer\s+[a-z0-9\-._~+/]{8}",),
    "basic_auth": (rb"asic\s+[a-z0-9+/]{4}",),
    "aws_secret_key": (rb"ws_secret_access_key[\"']?\s*[:=]\s*[\"']?[a-z0-9/+]{40}",),
    "email": (rb"@[a-z0-9][a-z0-9.\-]*\.[a-z]{2}",),
    "credit_card": (_CARD,),
    "phone": (
        rb"\+0{1,3}(?:[ .\-]?\(0{1,4}\))?(?:[ .\-]?0){4}",
        rb"\(000\)[ .\-]?000[ .\-]0000",
        _NANP,
    ),
}
# Hints of different types that start with the same literal run as one pass (one scan of the
# request instead of two); a hit only names the item to walk, so which type hit is not needed.
_MERGED: dict[frozenset[bytes], bytes] = {
    frozenset({_CARD, _NANP}): _merged(b"000", _CARD, _NANP),
}
# Over the request as it is (lowercase `akia` would be a common-letter start).
_RAW_HINTS: dict[str, tuple[bytes, ...]] = {
    "api_key": (rb"A(?:[KS]IA[A-Z0-9]{16}|Iza[0-9A-Za-z_\-]{35})",),
}
# What redaction walks where a hint overlaps it: (resource, scope, span, kind, i, j, start,
# end); kind 0: resource attribute i, 1: span name, 2: span attribute i, 3: event i's attribute
# j, 4: link i's attribute j, 5: status message; start..end: the string's bytes when it can be
# replaced in place (one string member, written once), else -1.
Target = tuple[int, int, int, int, int, int, int, int]

_FOLD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ123456789", b"abcdefghijklmnopqrstuvwxyz000000000"
)


class Prefilter:
    """Finds the items of a request that may hold a match of the enabled types."""

    def __init__(self, types: frozenset[str]) -> None:
        def compiled(hints: dict[str, tuple[bytes, ...]]) -> list[re.Pattern[bytes]]:
            chosen = [h for t in hints if t in types for h in hints[t]]
            for parts, merged in _MERGED.items():
                if parts <= set(chosen):
                    chosen = [h for h in chosen if h not in parts] + [merged]
            return [re.compile(h) for h in chosen]

        self._folded = compiled(_FOLDED_HINTS)
        self._raw = compiled(_RAW_HINTS)
        # The same patterns in the native scanner (Rust's regex: the same leftmost-first
        # matches, with a vectorized literal search: ~7x faster than ten `re` passes).
        self._scanner = (
            HintScanner([p.pattern for p in self._raw], [p.pattern for p in self._folded], _FOLD)
            if HintScanner is not None
            else None
        )

    def hits(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every hint match in `data`."""
        if self._scanner is not None:
            return self._scanner.hits(data)
        return self.py_hits(data)

    def py_hits(self, data: bytes) -> list[tuple[int, int]]:
        """`hits` with Python's `re` (the reference the native scanner is held equal to)."""
        out = [m.span() for p in self._raw for m in p.finditer(data)]
        if self._folded:
            folded = data.translate(_FOLD)
            out += [m.span() for p in self._folded for m in p.finditer(folded)]
        return out

    def targets(self, data: bytes) -> list[Target] | None:
        """For a traces request, the attributes, span names and status messages some hint
        match overlaps (`native/src/wire.rs: trace_targets` says how they are named), or None
        when the native helpers are not built (then `items` says which spans to walk)."""
        if trace_targets is None:
            return None
        hits = self.hits(data)
        return trace_targets(data, hits) if hits else []

    def items(self, data: bytes) -> list[ItemRange]:
        """The resources and items (spans, log records) that some hint match overlaps."""
        hits = self.hits(data)
        if not hits:
            return []
        ranges = item_ranges(data)
        starts = [r[0] for r in ranges]
        found: dict[int, None] = {}
        for a, b in hits:
            # every range that overlaps [a, b): from the last one starting at or before a
            i = max(bisect.bisect_right(starts, a) - 1, 0)
            while i < len(ranges) and ranges[i][0] < b:
                if ranges[i][1] > a:
                    found[i] = None
                i += 1
        return [ItemRange._make(ranges[i]) for i in sorted(found)]
