"""The demo's prompt and answer text: what a captured prompt looks like, with a share of
e-mail addresses and phone numbers for the redaction processor."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from .profiles import PII_SHARE

_FIRST = ("jane", "omar", "li", "maria", "sam", "priya", "lukas", "ana", "kenji", "zoe")
_LAST = ("doe", "haddad", "wei", "garcia", "okafor", "sharma", "novak", "silva", "tanaka")
_DOMAINS = ("example.com", "mail.example.org", "acme-corp.io", "gmail.com")
_PROMPTS = (
    "Summarize the last three messages in this thread.",
    "Write a SQL query that returns the ten most recent orders per customer.",
    "Translate 'the invoice is overdue' into Portuguese and German.",
    "Explain the difference between a mutex and a semaphore in two sentences.",
    "Draft a polite reply declining the meeting on Friday.",
    "What is the capital of Australia, and why is it not Sydney?",
)
# (template, e-mail count, phone count); the completion may echo the address.
_PII_PROMPTS: tuple[tuple[str, int, int], ...] = (
    ("Please send the summary to {email} when it's ready.", 1, 0),
    ("Call me back on {phone}, my order still hasn't arrived.", 0, 1),
    ("My account email is {email} and my phone is {phone}; why was I charged twice?", 1, 1),
    ("Update my contact number to {phone}.", 0, 1),
)
_ANSWERS = (
    "Here is a concise summary of the discussion.",
    "Sure - the query below uses a window function to rank orders.",
    "Done. Let me know if you need any other changes.",
    "Canberra was chosen as a compromise between Sydney and Melbourne.",
)


def _email(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}@{rng.choice(_DOMAINS)}"


def _phone(rng: random.Random) -> str:
    area, line = rng.randint(201, 989), rng.randint(100, 9999)
    if rng.random() < 0.5:
        return f"+1 {area}-555-{line:04d}"
    return f"({area}) 555-{line:04d}"


@dataclass(slots=True)
class _Content:
    prompt: str
    answer: str
    prompt_emails: int = 0  # PII occurrences in the prompt
    prompt_phones: int = 0
    answer_emails: int = 0  # ... and in the completion
    email: str = ""


def _content(rng: random.Random) -> _Content:
    if rng.random() < PII_SHARE:
        template, n_email, n_phone = rng.choice(_PII_PROMPTS)
        email = _email(rng)
        prompt = template.format(email=email, phone=_phone(rng))
        c = _Content(prompt, rng.choice(_ANSWERS), n_email, n_phone, 0, email)
        if n_email and rng.random() < 0.5:
            c.answer = f"Done - I sent a confirmation to {email}."
            c.answer_emails = 1
        return c
    return _Content(rng.choice(_PROMPTS), rng.choice(_ANSWERS))


def _messages(system: str, user: str) -> str:
    return json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": system}]},
            {"role": "user", "parts": [{"type": "text", "content": user}]},
        ]
    )


def _output(answer: str, finish: str) -> str:
    return json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": answer}],
                "finish_reason": finish,
            }
        ]
    )


# --------------------------------------------------------------------------------------------
# One LLM call: planned first (so parents can be laid out in time), then emitted
