"""redact: remove secrets and PII from spans and logs before anything stores them.

What is scanned (string values only, including strings nested in array and kvlist values):
resource attributes, span names, span attributes, span event and link attributes, span status
messages, log record bodies, event names and attributes; every span, not only LLM calls. That
covers prompts and completions in every convention (`gen_ai.input.messages` JSON, `gen_ai.prompt`
events, OpenLLMetry `gen_ai.prompt.N.content`, OpenInference
`llm.input_messages.N.message.content`, `input.value`, `output.value`). Numbers are never
scanned, nor the attributes naming the call (`gen_ai.request.model`, `gen_ai.provider.name`, ...,
see `_NOT_SCANNED`), so metrics are unaffected (`error.type` is scanned: a secret in it
would otherwise become a metric label). Not scanned yet: attribute keys, span event names,
scope names and attributes, trace_state and bytes values (spans are rewritten where the native
prefilter's targets point, and those name only the values above).

Each match becomes a typed marker `[REDACTED:type]`:

- `email`: `local@domain.tld` (not image names such as `icon@2x.png`).
- `phone`: international `+CC ...` with 8-15 digits (`+44 20 7946 0958`, `+14155550123`), or
  US/NANP with separators: `(415) 555-0123`, `415-555-0123`, `415.555.0123`, `415 555 0123`,
  `1-800-555-0199`. Separators are required and a number must not run on into more digits, so
  plain integers, timestamps, IDs, dates and versions are not phone numbers.
- `credit_card`: 13-19 digits, contiguous or grouped as printed (4-4-4-4..., Amex 4-6-5,
  Diners 4-6-4) with one kind of separator (space or dash), starting with a card network's
  issuer prefix (Visa 4, Mastercard 51-55/2221-2720, Amex 34/37, Diners 30/36/38/39, JCB 35,
  Discover 6011/644-649/65, UnionPay 62) and passing the Luhn check; anything else is kept
  (phone numbers inside such a run of digits are still found).
- `api_key`: OpenAI `sk-...`/`sk-proj-...`, Anthropic `sk-ant-...`, AWS `AKIA...`/`ASIA...`,
  Google `AIza...`, GitHub `ghp_...` (and `gho_/ghu_/ghs_/ghr_`, `github_pat_...`) as a whole;
  in `api_key=VALUE` / `"apiKey": "VALUE"` / `X-Api-Key: VALUE` / `OPENAI_API_KEY=VALUE`
  assignments only the value is replaced, and only when it has 8+ characters and a digit or a
  provider prefix (so `api_key=None` or `api_key = settings.KEY` in code stays).
- `bearer_token`: `Bearer TOKEN` -> `Bearer [REDACTED:bearer_token]` (the token needs 8+
  characters and a digit, or 20+ characters, so "the bearer instruments" stays).
- `url_password`: `scheme://user:pass@host` -> `scheme://user:[REDACTED:url_password]@host`.
- `basic_auth`: `Basic BASE64` / `basic BASE64` -> `Basic [REDACTED:basic_auth]`, when BASE64
  decodes to `user:password` (so "basic instructions" stays).
- `aws_secret_key`: the 40-character value in `aws_secret_access_key = VALUE`,
  `AWS_SECRET_ACCESS_KEY=VALUE` or `"aws_secret_access_key": "VALUE"`.
- custom: `extra_patterns` name -> regex, marker `[REDACTED:name]`, run after the built-in
  types (each its own regex, so a pattern may use groups and flags such as `(?i)`).

`drop_attributes` removes attributes by key (exact, or a glob such as `gen_ai.prompt.*`) from
every attribute list scanned; each removal counts as type `dropped`. Counts go to `on_redact(type,
count)` once per type per batch. The batch is marked modified when anything changed. Redacting
twice changes nothing more (markers are not matched again).

Matches do not start inside a word, and an escape such as `\\n` in a JSON-encoded prompt is a
boundary (`...\\nbob@x.com` keeps its `\\n`); markers never break the JSON around them.

Speed (runs on every span): the request's bytes are searched first (`_prefilter`), in C, and
only the spans and log records a hint falls in are walked (all of them when custom patterns or
`drop_attributes` are configured). Within those, values shorter than the shortest possible match are skipped; cheap
`in` checks (`@`, `://`, `sk-`, `earer`, ...) and one small digit-run regex decide which types
can occur in a value at all (most values: none, and no regex runs); one combined regex of just
those types, a named group each, compiled once per combination and cached, does the scan. Each
combined regex starts with a character class of the types' first characters, which lets the
regex engine skip ahead in C instead of trying every alternative at every position. Email's
first characters are every local-part character, so where email is possible it is searched
apart, only around each `@` (`Redactor._matches`), and merged with the other types' matches.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..model import LogBatch, TraceBatch
from ._prefilter import Prefilter, Target
from ._wire import ItemRange

_B = TypeVar("_B", TraceBatch, LogBatch)
_R = TypeVar("_R")

EMAIL = "email"
PHONE = "phone"
CREDIT_CARD = "credit_card"
API_KEY = "api_key"
BEARER_TOKEN = "bearer_token"
URL_PASSWORD = "url_password"
BASIC_AUTH = "basic_auth"
AWS_SECRET_KEY = "aws_secret_key"
DROPPED = "dropped"
BUILTIN_TYPES = (
    EMAIL,
    PHONE,
    CREDIT_CARD,
    API_KEY,
    BEARER_TOKEN,
    URL_PASSWORD,
    BASIC_AUTH,
    AWS_SECRET_KEY,
)

# Attributes naming the model call (what the metrics are labelled by): never scanned, so
# redaction cannot change them. Token counts are numbers, never scanned anyway. (Not every key
# the convention tables read: `llm.invocation_parameters` is a JSON blob that may hold PII.)
_NOT_SCANNED = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.response.id",
        "llm.request.type",
        "llm.system",
        "llm.provider",
        "llm.model_name",
        "llm.request.model_name",
        "llm.response.model_name",
        "embedding.model_name",
        "openinference.span.kind",
    }
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _after(first: str, before: str) -> str:
    """After consuming the match's first char (one of `first`): the char before it is not in
    `before` (matches start at word boundaries), or the match follows an escape such as `\\n`."""
    return rf"(?<=[{first}])(?:(?<![{before}\\].)|(?<=\\[nrt].))"


# Each type is (first chars, the rest): a scan's regex is `[all first chars](?:(?P<type>rest)|...)`
# so the regex engine skips ahead to a possible first char in C (a pattern that starts with a
# character class gets that fast path; one that starts with a lookbehind or `|` does not).
# Order matters only for matches starting at the same position: the first alternative wins.
_FIRST: dict[str, str] = {
    URL_PASSWORD: ":",
    API_KEY: "sAag",
    BEARER_TOKEN: "bB",
    BASIC_AUTH: "bB",
    AWS_SECRET_KEY: "aA",
    EMAIL: r"A-Za-z0-9._%+\-",
    CREDIT_CARD: "2-6",
    PHONE: r"\d+(",
}
_REST: dict[str, str] = {
    # `scheme://user:password@`; the match starts at the `:` after the scheme.
    URL_PASSWORD: (
        r"(?<=[A-Za-z0-9+.\-]:)//[^\s/?#@:\"'\\]{0,256}:(?P<up_pw>[^\s/?#\"'\\]{1,256})@"
    ),
    API_KEY: (
        r"(?:" + _after("s", r"\w\-") + r"k-(?:proj-|ant-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"
        r"|" + _after("A", r"\w\-") + r"(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
        r"|" + _after("A", r"\w\-") + r"Iza[0-9A-Za-z_\-]{35}(?![\w\-])"
        r"|" + _after("g", r"\w\-") + r"(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})"
        # `api_key=V`, `"apiKey": "V"`, `X-Api-Key: V`, `OPENAI_API_KEY=V`: only V is replaced.
        r"|"
        + _after("aA", r"A-Za-z0-9")
        + r"(?:(?<=a)pi|(?<=A)(?:pi|PI))[_\-]?(?:key|KEY|Key)[\"']?\s*[:=]\s*"
        r"[\"']?(?P<ak_val>[A-Za-z0-9_\-.~+/=]{8,}))"
    ),
    BEARER_TOKEN: (
        _after("bB", r"\w\-") + r"(?:earer|EARER)\s+(?P<bt_tok>[A-Za-z0-9\-._~+/]{8,}=*)"
    ),
    # `Basic BASE64` (RFC 7617): replaced only when it decodes to `user:password` (`_replace`).
    BASIC_AUTH: (
        _after("bB", r"\w\-") + r"(?:asic|ASIC)\s+(?P<ba_val>[A-Za-z0-9+/]{4,}={0,2})(?![\w+/=])"
    ),
    # `aws_secret_access_key = V` / `AWS_SECRET_ACCESS_KEY=V` / `"aws_secret_access_key": "V"`
    # (AWS secret keys are 40 characters): only V is replaced.
    AWS_SECRET_KEY: (
        _after("aA", r"A-Za-z0-9")
        + r"(?:(?<=a)ws_secret_access_key|(?<=A)WS_SECRET_ACCESS_KEY)[\"']?\s*[:=]\s*[\"']?"
        r"(?P<as_val>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
    ),
    EMAIL: (
        _after(r"A-Za-z0-9._%+\-", r"\w.%+\-")
        + r"[A-Za-z0-9._%+\-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
        # not an image name such as `icon@2x.png`
        r"\.(?!(?:png|jpe?g|gif|svg|webp)(?![A-Za-z]))[A-Za-z]{2,24}(?![\w\-])"
    ),
    CREDIT_CARD: _after("2-6", r"\w.+\-/") + r"(?:[ \-]?\d){12,18}(?!\w|[.\-]\d)",
    PHONE: (
        _after(r"\d+(", r"\w.+\-/") + r"(?:"
        # +CC ... with 8-15 digits; one digit per repetition, so no exponential backtracking.
        r"(?<=\+)\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d){4,14}"
        r"|(?<=1)[ .\-]?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"  # 1-555-123-4567
        r"|(?<=\()\d{3}\)[ .\-]?\d{3}[ .\-]\d{4}"  # (555) 123-4567
        r"|(?<=\d)\d{2}[ .\-]\d{3}[ .\-]\d{4}"  # 555-123-4567, 555.123.4567
        r")(?!\w|[.\-]?\d)"
    ),
}

# Shortest string any built-in pattern can match (`a@b.co`).
_MIN_LEN = 6
# The shortest phone number (`+` and 8 digits) or card number.
_MIN_NUMBER_LEN = 9
# Every phone or card number contains a run like this; digits elsewhere (`gpt-4o`) do not.
_NUMBER_HINT = re.compile(r"\d[\d .()\-]{5,}\d", re.ASCII)

# A value in `api_key=VALUE` without a digit is still a key when it has a provider's prefix.
_KEY_PREFIX = re.compile(r"sk-|AKIA|ASIA|AIza|gh[pousr]_|github_pat_")

_BIT = {name: 1 << i for i, name in enumerate(BUILTIN_TYPES)}
_NUMBERS = _BIT[PHONE] | _BIT[CREDIT_CARD]
_EMAIL = _BIT[EMAIL]
# The types a combined regex tries before email at one position (the `_REST` order).
_BEFORE_EMAIL = frozenset(list(_REST)[: list(_REST).index(EMAIL)])
# An email starts at most this many characters before its `@`: the first character and the
# `{0,63}` of the local part in _REST[EMAIL].
_EMAIL_REACH = 64
_DOMAIN_RUN = re.compile(r"[A-Za-z0-9.\-]*")
# Where a card number can start inside a phone number or a rejected card candidate.
_CARD_START = re.compile(r" [2-6]\d{3}")


def _next_email(email: re.Pattern[str], s: str, pos: int) -> re.Match[str] | None:
    """The first match of the email-only pattern at or after `pos` (see Redactor._matches)."""
    k = s.find("@", pos)
    while k >= 0:
        run_end = _DOMAIN_RUN.match(s, k + 1).end()  # type: ignore[union-attr]
        m = email.search(s, max(pos, k - _EMAIL_REACH), run_end + 1)
        if m is not None:
            return m
        pos = k + 1  # an email with a later `@` starts after this one
        k = s.find("@", pos)
    return None


def _is_basic_credentials(value: str) -> bool:
    """`value` is base64 of `user:password` (so "basic instructions" is kept). The pattern
    allows only base64 characters; most words fail the length check (no exception raised)."""
    if len(value) % 4:
        return False
    try:
        text = base64.b64decode(value).decode()
    except ValueError:  # binascii.Error: `=` padding misplaced; UnicodeDecodeError: not UTF-8
        return False
    return ":" in text and text.isprintable()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i & 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


# Issuer prefixes (IIN) of the card networks: Visa, Mastercard (51-55, 2221-2720), Amex,
# Diners, JCB, Discover, UnionPay.
_IIN = re.compile(
    r"4|5[1-5]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|3(?:0[0-5]|[689])|35"
    r"|6(?:011|4[4-9]|5|2)"
)
# Group lengths of card numbers as written: 4-4-4-4 (13-19 digits: 4-4-4-1..4, 4-4-4-4-1..3),
# Amex 4-6-5, Diners 4-6-4.
_CARD_GROUPS = re.compile(
    r"\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1(?:\d{1,4}|\d{4}\1\d{1,3})"
    r"|\d{4}([ -])\d{6}\2\d{4,5}"
)


def is_card_number(text: str) -> bool:
    """13-19 digits grouped as cards are written, a card network's prefix, and Luhn-valid."""
    if _CARD_GROUPS.fullmatch(text) is None:
        return False
    digits = text.replace(" ", "").replace("-", "")
    return _IIN.match(digits) is not None and luhn_valid(digits)


def _hints(s: str) -> int:
    """Bits of the built-in types that can possibly occur in `s` (necessary conditions)."""
    mask = 0
    if "@" in s:
        mask |= _BIT[EMAIL]
        if "://" in s:
            mask |= _BIT[URL_PASSWORD]
    if "earer" in s or "EARER" in s:
        mask |= _BIT[BEARER_TOKEN]
    if "asic" in s or "ASIC" in s:
        mask |= _BIT[BASIC_AUTH]
    if "ws_secret_access_key" in s or "WS_SECRET_ACCESS_KEY" in s:
        mask |= _BIT[AWS_SECRET_KEY]
    if (
        "sk-" in s
        or "api" in s
        or ("A" in s and ("API" in s or "Api" in s or "AIza" in s or "AKIA" in s or "ASIA" in s))
        or ("_" in s and "gh" in s)
    ):
        mask |= _BIT[API_KEY]
    if len(s) >= _MIN_NUMBER_LEN and _NUMBER_HINT.search(s) is not None:
        mask |= _NUMBERS
    return mask


@dataclass
class RedactConfig:
    """`types`: a mapping type -> on/off (types not named stay on) or the set of types on."""

    enabled: bool = True
    types: dict[str, bool] | set[str] = field(
        default_factory=lambda: dict.fromkeys(BUILTIN_TYPES, True)
    )
    extra_patterns: dict[str, str] = field(default_factory=dict)
    drop_attributes: list[str] = field(default_factory=list)

    def enabled_types(self) -> frozenset[str]:
        if isinstance(self.types, dict):
            return frozenset(t for t in BUILTIN_TYPES if self.types.get(t, True))
        return frozenset(self.types)

    def compiled_extras(self) -> dict[str, re.Pattern[str]]:
        out: dict[str, re.Pattern[str]] = {}
        for name, pattern in self.extra_patterns.items():
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(
                    f"extra_patterns.{name}: name must be lowercase letters, digits and _"
                )
            if name in BUILTIN_TYPES or name == DROPPED:
                raise ValueError(f"extra_patterns.{name}: the name of a built-in type")
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"extra_patterns.{name}: expected a non-empty regex string")
            try:
                compiled = re.compile(pattern)
            except re.error as e:
                raise ValueError(f"extra_patterns.{name}: invalid regex: {e}") from e
            if compiled.fullmatch("") is not None:
                raise ValueError(f"extra_patterns.{name}: matches the empty string")
            out[name] = compiled
        return out

    def validate(self) -> None:
        names = self.types.keys() if isinstance(self.types, dict) else self.types
        unknown = sorted(set(names) - set(BUILTIN_TYPES))
        if unknown:
            raise ValueError(f"types: unknown {unknown}; known: {', '.join(BUILTIN_TYPES)}")
        self.compiled_extras()
        for key in self.drop_attributes:
            if not isinstance(key, str) or not key:
                raise ValueError(f"drop_attributes: expected non-empty keys, got {key!r}")


OnRedact = Callable[[str, int], None]


class Redactor:
    """Redacts a `TraceBatch` or `LogBatch` in place; see the module docstring for the rules."""

    def __init__(
        self, config: RedactConfig | None = None, on_redact: OnRedact | None = None
    ) -> None:
        self.config = cfg = config or RedactConfig()
        cfg.validate()
        self._on_redact = on_redact
        types = cfg.enabled_types()
        self._enabled_mask = sum(_BIT[t] for t in types)
        extras = cfg.compiled_extras()
        # Custom patterns run after the built-in scan, each its own regex (a user's pattern may
        # carry groups, backreferences or global flags that cannot be spliced into ours).
        self._extras = list(extras.items())
        self._min_len = _MIN_LEN
        self._patterns: dict[int, re.Pattern[str]] = {}
        self._markers = {t: f"[REDACTED:{t}]" for t in (*BUILTIN_TYPES, *extras)}
        exact = {k for k in cfg.drop_attributes if not any(c in k for c in "*?[")}
        globs = [k for k in cfg.drop_attributes if k not in exact]
        self._drop_exact = frozenset(exact)
        self._drop_glob = (
            re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        )
        self._dropping = bool(cfg.drop_attributes)
        self._prefilter = Prefilter(types)

    # -- the scan of one string ---------------------------------------------------------------

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

    # -- OTLP structures ----------------------------------------------------------------------

    def _value(self, v: Any, counts: dict[str, int]) -> bool:
        """Redact an AnyValue in place; True when it changed."""
        s = v.string_value
        if s:
            r = self.redact_text(s, counts)
            if r != s:
                v.string_value = r
                return True
            return False
        kind = v.WhichOneof("value")
        changed = False
        if kind == "array_value":
            for x in v.array_value.values:
                changed |= self._value(x, counts)
        elif kind == "kvlist_value":
            for kv in v.kvlist_value.values:
                changed |= self._value(kv.value, counts)
        return changed

    def _attributes(self, attrs: Any, counts: dict[str, int]) -> bool:
        changed = False
        if self._dropping:
            drop = [i for i, kv in enumerate(attrs) if self._drops(kv.key)]
            for i in reversed(drop):
                del attrs[i]
            if drop:
                counts[DROPPED] = counts.get(DROPPED, 0) + len(drop)
                changed = True
        for kv in attrs:
            if kv.key not in _NOT_SCANNED:
                changed |= self._value(kv.value, counts)
        return changed

    def _drops(self, key: str) -> bool:
        if key in self._drop_exact:
            return True
        return self._drop_glob is not None and self._drop_glob.match(key) is not None

    def _string_field(self, msg: Any, name: str, counts: dict[str, int]) -> bool:
        s = getattr(msg, name)
        if not s:
            return False
        r = self.redact_text(s, counts)
        if r == s:
            return False
        setattr(msg, name, r)
        return True

    def _span(self, span: Any, counts: dict[str, int]) -> bool:
        changed = self._string_field(span, "name", counts)
        changed |= self._attributes(span.attributes, counts)
        for ev in span.events:
            changed |= self._attributes(ev.attributes, counts)
        for link in span.links:
            changed |= self._attributes(link.attributes, counts)
        if span.status.message:
            changed |= self._string_field(span.status, "message", counts)
        return changed

    def _record(self, rec: Any, counts: dict[str, int]) -> bool:
        changed = self._value(rec.body, counts)
        if rec.event_name:
            changed |= self._string_field(rec, "event_name", counts)
        return self._attributes(rec.attributes, counts) | changed

    def _prefiltered(self, batch: TraceBatch | LogBatch, find: Callable[[bytes], _R]) -> _R | None:
        """What the prefilter finds in the batch's bytes (the received ones while they hold,
        else the request serialized now), or None: walk everything (custom patterns and
        dropped keys are not prefiltered)."""
        if self._extras or self._dropping:
            return None
        data = batch.received
        if data is None:
            data = batch.request.SerializeToString()
        try:
            return find(data)
        except (ValueError, IndexError):  # not the wire shape expected: be thorough instead
            return None

    def _candidates(self, batch: TraceBatch | LogBatch) -> list[ItemRange] | None:
        """The items the prefilter says may hold a match, or None: walk everything."""
        return self._prefiltered(batch, self._prefilter.items)

    def _redact_targets(
        self, batch: TraceBatch, targets: list[Target], received: bool
    ) -> TraceBatch:
        """Redact only what a hint overlaps (`Prefilter.targets`): a hinted span's other
        attributes are not walked, nor turned into Python strings. A string replaced in place
        is recorded as a byte edit too (`TraceBatch.record_edit`) when the targets' offsets
        are those of the received bytes (`received`), else the batch is touched."""
        counts: dict[str, int] = {}
        resources = batch.request.resource_spans
        at: tuple[int, int, int] | None = None
        span: Any = None
        for r, s, i, kind, x, y, start, end in targets:
            if kind == 0:
                holder, name = resources[r].resource.attributes[x], "value"
            else:
                if at != (r, s, i):
                    span, at = resources[r].scope_spans[s].spans[i], (r, s, i)
                if kind == 1:
                    holder, name = span, "name"
                elif kind == 5:
                    holder, name = span.status, "message"
                elif kind == 2:
                    holder, name = span.attributes[x], "value"
                else:
                    holder = (span.events if kind == 3 else span.links)[x].attributes[y]
                    name = "value"
            if name == "value":
                if holder.key in _NOT_SCANNED:
                    continue
                if start < 0:  # an array, a kvlist, a value written twice: not in place
                    if self._value(holder.value, counts):
                        batch.touch()
                    continue
                holder, name = holder.value, "string_value"
            text = getattr(holder, name)
            if not text:
                continue
            new = self.redact_text(text, counts)
            if new != text:
                setattr(holder, name, new)
                if received and start >= 0:
                    batch.record_edit(start, end, new.encode())
                else:
                    batch.touch()
        self._report(counts)
        return batch

    def _targets(self, batch: TraceBatch | LogBatch) -> Iterator[tuple[Any, Any]]:
        """(resource, None) and (None, span or log record) for each thing to walk."""
        if isinstance(batch, TraceBatch):
            resources, scopes, items = batch.request.resource_spans, "scope_spans", "spans"
        else:
            resources, scopes, items = batch.request.resource_logs, "scope_logs", "log_records"
        candidates = self._candidates(batch)
        if candidates is None:
            for res in resources:
                yield res.resource, None
                for scope in getattr(res, scopes):
                    for item in getattr(scope, items):
                        yield None, item
            return
        for r in candidates:
            res = resources[r.resource]
            if r.scope < 0:
                yield res.resource, None
            else:
                yield None, getattr(getattr(res, scopes)[r.scope], items)[r.item]

    def _redact(self, batch: _B, redact_item: Callable[[Any, dict[str, int]], bool]) -> _B:
        counts: dict[str, int] = {}
        changed = False
        for resource, item in self._targets(batch):
            if item is None:
                changed |= self._attributes(resource.attributes, counts)
            else:
                changed |= redact_item(item, counts)
        if changed:
            batch.touch()  # changes made in place, not recorded as byte edits
        self._report(counts)
        return batch

    def redact_traces(self, batch: TraceBatch) -> TraceBatch:
        # the targets' offsets are those of the received bytes only while those hold
        received = batch.received is not None
        targets = self._prefiltered(batch, self._prefilter.targets)
        if targets is not None:
            return self._redact_targets(batch, targets, received)
        return self._redact(batch, self._span)

    def redact_logs(self, batch: LogBatch) -> LogBatch:
        return self._redact(batch, self._record)

    def _report(self, counts: dict[str, int]) -> None:
        if self._on_redact is not None:
            for kind, n in counts.items():
                if n:
                    self._on_redact(kind, n)

    def __call__(self, batch: Any) -> Any:
        if not self.config.enabled:
            return batch
        if isinstance(batch, TraceBatch):
            return self.redact_traces(batch)
        if isinstance(batch, LogBatch):
            return self.redact_logs(batch)
        return batch
