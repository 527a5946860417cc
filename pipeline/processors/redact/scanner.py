"""The scan of one string: every enabled match replaced by its typed marker.

Speed (runs on every string a prefilter hint falls in, see walk.py): values shorter than the
shortest possible match are skipped; cheap `in` checks (`@`, `://`, `sk-`, `earer`, ...) and
one small digit-run regex decide which types can occur in a value at all (most values: none,
and no regex runs); one combined regex of just those types, a named group each, compiled once
per combination and cached, does the scan. Each combined regex starts with a character class of
the types' first characters, which lets the regex engine skip ahead in C instead of trying
every alternative at every position. Email's first characters are every local-part character,
so where email is possible it is searched apart, only around each `@` (`Scanner._matches`),
and merged with the other types' matches.
"""

from __future__ import annotations

import re

from .patterns import (
    _BEFORE_EMAIL,
    _BIT,
    _CARD_START,
    _DOMAIN_RUN,
    _EMAIL,
    _EMAIL_REACH,
    _FIRST,
    _KEY_PREFIX,
    _MIN_LEN,
    _NUMBERS,
    _REST,
    API_KEY,
    AWS_SECRET_KEY,
    BASIC_AUTH,
    BEARER_TOKEN,
    BUILTIN_TYPES,
    CREDIT_CARD,
    PHONE,
    URL_PASSWORD,
    _hints,
    _is_basic_credentials,
    is_card_number,
)


def _next_email(email: re.Pattern[str], s: str, pos: int) -> re.Match[str] | None:
    """The first match of the email-only pattern at or after `pos` (see Scanner._matches)."""
    k = s.find("@", pos)
    while k >= 0:
        run_end = _DOMAIN_RUN.match(s, k + 1).end()  # type: ignore[union-attr]
        m = email.search(s, max(pos, k - _EMAIL_REACH), run_end + 1)
        if m is not None:
            return m
        pos = k + 1  # an email with a later `@` starts after this one
        k = s.find("@", pos)
    return None


class Scanner:
    """Redacts strings: the built-in `types` (a combined regex per combination of the types a
    string can hold), then each custom pattern of `extras`."""

    def __init__(
        self, types: frozenset[str], extras: dict[str, re.Pattern[str]] | None = None
    ) -> None:
        self._enabled_mask = sum(_BIT[t] for t in types)
        extras = extras or {}
        # Custom patterns run after the built-in scan, each its own regex (a user's pattern may
        # carry groups, backreferences or global flags that cannot be spliced into ours).
        self._extras = list(extras.items())
        self._patterns: dict[int, re.Pattern[str]] = {}
        self._markers = {t: f"[REDACTED:{t}]" for t in (*BUILTIN_TYPES, *extras)}

    def _pattern(self, mask: int) -> re.Pattern[str]:
        """The combined regex of the types in `mask`, compiled once per combination."""
        p = self._patterns.get(mask)
        if p is None:
            types = [t for t in _REST if mask & _BIT[t]]
            first = "".join(_FIRST[t] for t in types)
            rest = "|".join(f"(?P<{t}>{_REST[t]})" for t in types)
            p = self._patterns[mask] = re.compile(f"[{first}](?:{rest})", re.ASCII)
        return p

    def redact_text(self, s: str, counts: dict[str, int]) -> str:
        """`s` with every enabled match replaced; `counts` gets +1 per replacement by type."""
        if len(s) >= _MIN_LEN:
            mask = _hints(s) & self._enabled_mask
            if mask:

                def replace(m: re.Match[str]) -> str:
                    return self._replace(m, counts)

                if mask & _NUMBERS:
                    s = self._redact_numbers(mask, s, counts)
                elif mask & _EMAIL:
                    parts: list[str] = []
                    last = 0
                    for m in self._matches(mask, s):
                        parts += (s[last : m.start()], replace(m))
                        last = m.end()
                    s = "".join(parts) + s[last:] if parts else s
                else:
                    s = self._pattern(mask).sub(replace, s)
        for name, compiled in self._extras:
            s, n = compiled.subn(self._markers[name], s)
            if n:
                counts[name] = counts.get(name, 0) + n
        return s

    def _redact_numbers(self, mask: int, s: str, counts: dict[str, int]) -> str:
        """`redact_text`'s scan where phone or card numbers can occur: a number's replacement
        may reach past its match (a card that starts inside a phone number or inside a
        rejected card candidate, see `_number`), and then the scan resumes after it."""

        def find(pos: int) -> list[re.Match[str]]:
            if mask & _EMAIL:
                return self._matches(mask, s, pos)
            return list(self._pattern(mask).finditer(s, pos))

        parts: list[str] = []
        last = 0
        found, i = find(0), 0
        while i < len(found):
            m = found[i]
            i += 1
            if m.lastgroup in (PHONE, CREDIT_CARD):
                out, end = self._number(m, counts)
            else:
                out, end = self._replace(m, counts), m.end()
            parts += (s[last : m.start()], out)
            last = end
            if end > m.end():
                found, i = find(end), 0
        return "".join(parts) + s[last:] if parts else s

    def _number(self, m: re.Match[str], counts: dict[str, int]) -> tuple[str, int]:
        """A phone or card match's replacement and where it ends. A valid card that starts
        after a separator inside the match wins over the match (the international phone
        pattern takes up to 15 digits and would end inside a card that follows; a phone and
        a card with different separators are one rejected card candidate): the card is
        redacted whole and phone numbers before it are still found."""
        s, a, e = m.string, m.start(), m.end()
        if m.lastgroup == CREDIT_CARD:
            end = self._card_end(s, a)
            if end is not None:
                counts[CREDIT_CARD] = counts.get(CREDIT_CARD, 0) + 1
                return self._markers[CREDIT_CARD], end
        if self._enabled_mask & _BIT[CREDIT_CARD]:
            # a card starts after a space (not a `-`) with 4 digits (`is_card_number`)
            c = _CARD_START.search(s, a + 1, e)
            while c is not None:
                end = self._card_end(s, c.start() + 1)
                if end is not None:
                    counts[CREDIT_CARD] = counts.get(CREDIT_CARD, 0) + 1
                    marker = self._markers[CREDIT_CARD]
                    return self._phones(s[a : c.start() + 1], counts) + marker, end
                c = _CARD_START.search(s, c.start() + 1, e)
        if m.lastgroup == CREDIT_CARD:
            return self._phones(m.group(), counts), e
        return self._replace(m, counts), e

    def _card_end(self, s: str, c: int) -> int | None:
        """Where the card number starting at `c` ends, or None: not a card there."""
        m = self._pattern(_BIT[CREDIT_CARD]).match(s, c)
        if m is None:
            return None
        text = m.group()
        for end in [len(text)] + [i for i in range(len(text) - 1, 0, -1) if text[i] in " -"]:
            if is_card_number(text[:end]):
                return c + end
        return None

    def _phones(self, text: str, counts: dict[str, int]) -> str:
        if self._enabled_mask & _BIT[PHONE]:
            return self._pattern(_BIT[PHONE]).sub(lambda m: self._replace(m, counts), text)
        return text

    def _matches(self, mask: int, s: str, pos: int = 0) -> list[re.Match[str]]:
        """What `self._pattern(mask).finditer(s)` finds, for a mask with email, without trying
        the email alternative at every character (its first-character class is every
        local-part character: ~70% of the regex time on the demo's texts). An email's `@` is at
        most `_EMAIL_REACH` characters after its start and the email ends inside the run of
        domain characters after the `@`, so it is searched only in that window: lookbehinds
        see before `pos`, and `endpos` is one past the run, so every lookahead of the email
        pattern sees what it would in the whole string. The other types are searched as
        usual; at one start the first alternative in `_REST` order wins, as in the combined
        regex (tests/processors/test_redact.py holds the two equal)."""
        other_mask = mask & ~_EMAIL
        other = self._pattern(other_mask) if other_mask else None
        email = self._pattern(_EMAIL)
        out: list[re.Match[str]] = []
        m_other = other.search(s, pos) if other is not None else None
        m_email = _next_email(email, s, pos)
        while m_other is not None or m_email is not None:
            if m_email is None or (
                m_other is not None
                and (
                    m_other.start() < m_email.start()
                    or (m_other.start() == m_email.start() and m_other.lastgroup in _BEFORE_EMAIL)
                )
            ):
                m = m_other
            else:
                m = m_email
            assert m is not None
            out.append(m)
            pos = m.end()
            if m_other is not None and m_other.start() < pos:
                m_other = other.search(s, pos) if other is not None else None
            if m_email is not None and m_email.start() < pos:
                m_email = _next_email(email, s, pos)
        return out

    def _replace(self, m: re.Match[str], counts: dict[str, int]) -> str:
        kind = m.lastgroup or ""
        text = m.group()
        start = m.start()
        out: str | None = None
        if kind == URL_PASSWORD:  # keep `://user:`, replace the password
            if m.group("up_pw") != self._markers[kind]:  # not redacted already
                out = text[: m.start("up_pw") - start] + self._markers[kind] + "@"
        elif kind == API_KEY:
            val = m.group("ak_val")
            if val is None:
                out = self._markers[kind]
            elif any(c.isdigit() for c in val) or _KEY_PREFIX.match(val):
                out = text[: m.start("ak_val") - start] + self._markers[kind]
        elif kind == BEARER_TOKEN:
            tok = m.group("bt_tok")
            if len(tok) >= 20 or any(c.isdigit() for c in tok):
                out = text[: m.start("bt_tok") - start] + self._markers[kind]
        elif kind == BASIC_AUTH:
            if _is_basic_credentials(m.group("ba_val")):
                out = text[: m.start("ba_val") - start] + self._markers[kind]
        elif kind == AWS_SECRET_KEY:
            out = text[: m.start("as_val") - start] + self._markers[kind]
        elif kind == PHONE:
            if text[0] != "+" or 8 <= sum(c.isdigit() for c in text) <= 15:
                out = self._markers[kind]
        else:
            out = self._markers[kind]
        if out is None:
            return text
        counts[kind] = counts.get(kind, 0) + 1
        return out
