"""Span roles beyond the model call (agent, workflow, tool, retrieval, embedding, llm), as data.

Each convention marks a span's role with one attribute; `ROLE_KEYS` maps that attribute's
values to a role, and `NAME_KEYS` says where each convention writes the agent, workflow and
tool names. The `agents` processor reads these tables; nothing else in them is code.

- OTel GenAI semantic conventions (v1.41 and semantic-conventions-genai): `gen_ai.operation.name`
  `invoke_agent`, `create_agent`, `invoke_workflow`, `execute_tool`, `retrieval`,
  `embeddings`; names in `gen_ai.agent.name`, `gen_ai.workflow.name`, `gen_ai.tool.name`,
  `gen_ai.tool.type`.
- OpenLLMetry (Traceloop SDK decorators, `opentelemetry-semantic-conventions-ai`):
  `traceloop.span.kind` `agent`, `workflow`, `task`, `tool`; the entity's name in
  `traceloop.entity.name`, the enclosing workflow's in `traceloop.workflow.name`.
- OpenInference: `openinference.span.kind` `AGENT`, `CHAIN`, `TOOL`, `RETRIEVER`,
  `EMBEDDING`, `LLM`; `tool.name`, `graph.node.name` / `agent.name` for agents. A CHAIN span
  is a workflow step; it counts as a workflow only when it is a trace's root chain (see the
  processor), since frameworks nest chains for every step. `openinference-instrumentation-
  openai-agents` (2.6) writes the Agents SDK's trace as a root `AGENT` span named after the
  trace ("Agent workflow") with no agent name, above the agents' own `AGENT` spans (which
  carry `agent.name`): such a root is a workflow (`is_trace_wrapper`).
"""

from __future__ import annotations

from collections.abc import Mapping

AGENT = "agent"
CREATE_AGENT = "create_agent"
WORKFLOW = "workflow"
TASK = "task"  # a step inside a workflow: no metric of its own
TOOL = "tool"
RETRIEVAL = "retrieval"
EMBEDDING = "embedding"
LLM = "llm"
CHAIN = "chain"  # OpenInference: a workflow when it is the root, a step otherwise

ROLES = (AGENT, CREATE_AGENT, WORKFLOW, TASK, TOOL, RETRIEVAL, EMBEDDING, LLM, CHAIN)

# attribute key -> {value -> role}; the first key in this order that a span carries decides.
ROLE_KEYS: dict[str, dict[str, str]] = {
    "gen_ai.operation.name": {
        "invoke_agent": AGENT,
        "create_agent": CREATE_AGENT,
        "invoke_workflow": WORKFLOW,
        "execute_tool": TOOL,
        "retrieval": RETRIEVAL,
        "embeddings": EMBEDDING,
        "chat": LLM,
        "text_completion": LLM,
        "generate_content": LLM,
    },
    "traceloop.span.kind": {
        "agent": AGENT,
        "workflow": WORKFLOW,
        "task": TASK,
        "tool": TOOL,
    },
    "openinference.span.kind": {
        "AGENT": AGENT,
        "CHAIN": CHAIN,
        "TOOL": TOOL,
        "RETRIEVER": RETRIEVAL,
        "EMBEDDING": EMBEDDING,
        "LLM": LLM,
    },
}

# Roles whose spans are not model calls even when they carry a model name and token counts
# (an `invoke_agent` span may sum its calls' usage): the chat metrics must not count them.
NOT_A_CALL = frozenset({AGENT, CREATE_AGENT, WORKFLOW, TOOL, RETRIEVAL, TASK, CHAIN})

# Span names (semconv: "{gen_ai.operation.name} {name}") that mark a role on a span of any kind:
# `agents` reads the attributes of INTERNAL spans and of spans named so (a remote agent's
# `invoke_agent` span is CLIENT).
SPAN_NAMES: tuple[str, ...] = tuple(
    v for v, role in ROLE_KEYS["gen_ai.operation.name"].items() if role in NOT_A_CALL
)

# name kind -> attribute keys, highest priority first.
NAME_KEYS: dict[str, tuple[str, ...]] = {
    "agent": ("gen_ai.agent.name", "agent.name", "graph.node.name"),
    "workflow": ("gen_ai.workflow.name", "traceloop.workflow.name"),
    "tool": ("gen_ai.tool.name", "tool.name"),
    "tool_type": ("gen_ai.tool.type",),
    # OpenLLMetry's decorators put the entity's name here for every kind.
    "entity": ("traceloop.entity.name",),
    "model": ("gen_ai.request.model", "llm.model_name", "embedding.model_name"),
    "provider": ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system"),
    "error": ("error.type",),
}

# Every key the processor reads: one set lookup per attribute.
KEYS: frozenset[str] = frozenset(ROLE_KEYS) | frozenset(k for ks in NAME_KEYS.values() for k in ks)


def role_of(attrs: Mapping[str, str]) -> str:
    """The span's role from its (string) attributes, or "" when it has none."""
    for key in ROLE_KEYS:
        v = attrs.get(key)
        if v is not None and (role := ROLE_KEYS[key].get(v)):
            return role
    return ""


def is_trace_wrapper(attrs: Mapping[str, str]) -> bool:
    """An OpenInference root AGENT span that names no agent: the framework's trace, a workflow
    (the caller checks it is a root)."""
    return attrs.get("openinference.span.kind") == "AGENT" and not name_of(attrs, "agent")


def name_of(attrs: Mapping[str, str], kind: str) -> str:
    for key in NAME_KEYS[kind]:
        v = attrs.get(key)
        if v:
            return v
    return ""
