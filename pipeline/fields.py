"""The canonical fields a convention table maps attribute keys to (see processors/conventions):
`LLMCall`'s, and what the native call reader returns (`_native.CALL_FIELDS`)."""

FIELDS = (
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "ttft_s",
    "streaming",
    "error_type",
    "server_ttft_s",
    "server_duration_s",
    "span_kind_hint",
    "cost_usd",
)
