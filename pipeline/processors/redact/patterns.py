"""The redaction catalogue: the built-in types, their patterns, and what enables them.

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

Matches do not start inside a word, and an escape such as `\\n` in a JSON-encoded prompt is a
boundary (`...\\nbob@x.com` keeps its `\\n`); markers never break the JSON around them.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

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
