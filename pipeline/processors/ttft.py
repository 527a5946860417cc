"""ttft: time to first chunk, the chunks' times and time per output token for streamed calls.

TTFT is `gen_ai.response.time_to_first_chunk` when the span has it, else the first span event
that marks a streamed chunk (span start -> that event). The chunk events' times are kept
(`LLMCall.chunk_ns`): the metrics record one time-per-output-chunk observation per chunk after
the first, the interval since the previous one (the semantic conventions' definition). The
call's average time per output token, (end - first chunk) / (output tokens - 1), is kept
apart (`time_per_token_s`): a different quantity, under a name of the project's own.
"""

from __future__ import annotations

from typing import Any

from ..model import TraceBatch
from .conventions import CHUNK_EVENTS


def chunk_times(span: Any, start_ns: int) -> tuple[int, ...]:
    """The times of the span's streamed-chunk events at or after `start_ns`, ascending."""
    return tuple(
        sorted(
            ev.time_unix_nano
            for ev in span.events
            if ev.name in CHUNK_EVENTS and ev.time_unix_nano >= start_ns
        )
    )


def ttft(batch: TraceBatch) -> TraceBatch:
    for call in batch.calls:
        if call.server_side:
            continue
        chunks = call.chunk_ns
        # not read (or an int: a native reader built before chunk_ns, which handed over the
        # first chunk's time there): from the parsed events
        if type(chunks) is not tuple:
            chunks = call.chunk_ns = chunk_times(call.span, call.start_ns)
        if call.ttft_s is None and chunks:
            call.ttft_s = (chunks[0] - call.start_ns) / 1e9
            call.ttft_derived = True
            call.streaming = True
        if call.streaming and call.ttft_s is not None:
            out = call.output_tokens
            remaining = call.duration_s - call.ttft_s
            if out is not None and out > 1 and remaining >= 0:
                call.time_per_token_s = remaining / (out - 1)
    return batch
