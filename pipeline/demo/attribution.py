"""Who a demo request is for: tenant, user, feature and conversation, with Zipf-like skew.

A few tenants carry most of the traffic (weight 1/rank^1.1), and within a tenant a few users;
each service has its features, each feature a team. A conversation id lasts a few requests of one user.
Drawn from a generator of its own, seeded by the service and request number, so the traffic
the seed decides (scenarios, models, tokens) is the same with or without these attributes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TENANTS = (
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "aperture",
)
USERS_PER_TENANT = 40
FEATURES = {
    "chat-api": ("chat", "summarize", "translate", "autocomplete"),
    "rag-worker": ("search", "ingest", "answer"),
    "support-bot": ("triage", "reply", "escalate"),
}
# the team that owns a feature
TEAMS = {
    "chat": "assistant",
    "summarize": "assistant",
    "translate": "assistant",
    "autocomplete": "editor",
    "search": "knowledge",
    "ingest": "knowledge",
    "answer": "knowledge",
    "triage": "support",
    "reply": "support",
    "escalate": "support",
}
_S = 1.1  # Zipf exponent


def _zipf(n: int) -> list[float]:
    return [1 / (rank**_S) for rank in range(1, n + 1)]


_TENANT_W = _zipf(len(TENANTS))
_USER_W = _zipf(USERS_PER_TENANT)


@dataclass(frozen=True, slots=True)
class Who:
    tenant: str
    user: str
    feature: str
    conversation: str

    def request_attributes(self) -> dict[str, str]:
        """Set on the request (root) span: the LLM spans below inherit them."""
        return {
            "tenant.id": self.tenant,
            "user.id": self.user,
            "app.feature": self.feature,
            "app.team": TEAMS.get(self.feature, "platform"),
        }


def draw(service: str, request_number: int) -> Who:
    rng = random.Random(f"{service}:{request_number}")
    tenant = rng.choices(TENANTS, _TENANT_W)[0]
    user = rng.choices(range(USERS_PER_TENANT), _USER_W)[0]
    features = FEATURES.get(service, ("default",))
    feature = rng.choices(features, _zipf(len(features)))[0]
    # a user's conversation spans ~5 requests: number it by the request number's bucket
    conversation = f"conv-{tenant}-{user}-{request_number // 5 % 50}"
    return Who(tenant, f"{tenant}-user-{user:02d}", feature, conversation)
