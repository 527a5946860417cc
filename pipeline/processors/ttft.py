"""ttft: time to first chunk and time per output chunk for streamed calls.

From `gen_ai.response.time_to_first_chunk` when the span has it, else from the first span event
that marks a streamed chunk (span start -> that event). Time per output chunk is
(end - first chunk) / (output tokens - 1), the semantic conventions' definition.
"""

from __future__ import annotations

from ..model import TraceBatch
from .conventions import CHUNK_EVENTS


def ttft(batch: TraceBatch) -> TraceBatch:
    for call in batch.calls:
        if call.server_side:
            continue
        if call.ttft_s is None:
            first = call.first_chunk_ns
            if first is None:
                first = 0
                for ev in call.span.events:
                    if ev.name in CHUNK_EVENTS and ev.time_unix_nano >= call.start_ns:
                        t = ev.time_unix_nano
                        if first == 0 or t < first:
                            first = t
            if first:
                call.ttft_s = (first - call.start_ns) / 1e9
                call.ttft_derived = True
                call.streaming = True
        if call.streaming and call.ttft_s is not None:
            out = call.output_tokens
            remaining = call.duration_s - call.ttft_s
            if out is not None and out > 1 and remaining >= 0:
                call.time_per_chunk_s = remaining / (out - 1)
    return batch
