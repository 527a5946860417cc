"""What both receivers share: building the OTLP response for an accepted request."""

from __future__ import annotations

from google.protobuf.message import Message

from ..service import Accepted
from .decode import RESPONSE_TYPES

_REJECTED_FIELD = {
    "traces": "rejected_spans",
    "logs": "rejected_log_records",
    "metrics": "rejected_data_points",
}


def export_response(signal: str, result: Accepted) -> Message:
    """The Export*ServiceResponse, with partial_success when some items were rejected."""
    resp = RESPONSE_TYPES[signal]()
    if result.rejected:
        ps = resp.partial_success
        setattr(ps, _REJECTED_FIELD[signal], result.rejected)
        ps.error_message = result.message
    return resp


def bearer_ok(expected: str | None, header: str | None) -> bool:
    if not expected:
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    import hmac

    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), expected)
