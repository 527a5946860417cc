"""redact: remove secrets and PII from spans and logs before anything stores them.

The package by concern: `patterns` (the catalogue of types, their regexes and validators, and
`RedactConfig`), `scanner` (one string: which types it can hold, the combined regex, the
markers), `walk` (the OTLP request: which strings are scanned, in place, counted, recorded as
byte edits). The rules are in each module's docstring; callers import from here.
"""

from .patterns import BUILTIN_TYPES, DROPPED, RedactConfig, is_card_number, luhn_valid
from .scanner import Scanner
from .walk import OnRedact, Redactor

__all__ = [
    "BUILTIN_TYPES",
    "DROPPED",
    "OnRedact",
    "RedactConfig",
    "Redactor",
    "Scanner",
    "is_card_number",
    "luhn_valid",
]
