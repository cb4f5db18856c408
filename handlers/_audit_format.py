"""Fine-tuning format checks for audit: is a record a valid training example?

The shapes train reads (_hf.record_pair): chat `messages`, `prompt`/`completion`,
`instruction`/`response` (+ `input`), `question`/`answer`, or plain `text`. A chat row is
checked the way OpenAI's fine-tuning format validator checks one (the cookbook's
"data preparation and analysis for chat model fine-tuning"), with its error names:

  messages_not_list, empty_messages, message_not_object, message_missing_key (role),
  message_unrecognized_key, unrecognized_role, missing_content, content_not_string,
  empty_content, weight_not_0_or_1, example_missing_assistant_message

and, since our trainer learns the last turn, last_message_not_assistant, and
role_not_trainable for the tool/function turns OpenAI accepts and train does not yet. The
other shapes: field_not_string, empty_field; a record of no known shape: unknown_format.
check() returns (shape, issues); a record with no issues is one train accepts.
"""
from __future__ import annotations

SHAPES = ("chat", "prompt_completion", "instruction_response", "question_answer", "text",
          "unknown")
ROLES = ("system", "user", "assistant", "tool", "function")
TRAINABLE_ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "function_call", "tool_calls", "tool_call_id",
                "weight", "refusal")
PAIRS = (("prompt", "completion", "prompt_completion"),
         ("instruction", "response", "instruction_response"),
         ("question", "answer", "question_answer"))


def check(rec: dict) -> tuple[str, list[str]]:
    """(shape, issue codes) of one record; issue codes may repeat a code once per message
    but are de-duplicated here, in first-seen order. A null field counts as absent (a
    Parquet file gives every row every column)."""
    if any(v is None for v in rec.values()):
        rec = {k: v for k, v in rec.items() if v is not None}
    if "messages" in rec:
        return "chat", _dedup(_chat(rec["messages"]))
    for p_key, c_key, shape in PAIRS:
        if p_key in rec or c_key in rec:
            issues = []
            for key in (p_key, c_key):
                value = rec.get(key)
                if not isinstance(value, str):
                    issues.append(f"field_not_string:{key}")
                elif key == c_key and not value.strip():
                    issues.append(f"empty_field:{key}")
            if shape == "instruction_response" and rec.get("input") is not None \
                    and not isinstance(rec.get("input"), str):
                issues.append("field_not_string:input")
            return shape, issues
    if "text" in rec:
        text = rec["text"]
        if not isinstance(text, str):
            return "text", ["field_not_string:text"]
        return "text", [] if text.strip() else ["empty_field:text"]
    return "unknown", ["unknown_format"]


def _chat(msgs) -> list[str]:
    if not isinstance(msgs, list):
        return ["messages_not_list"]
    if not msgs:
        return ["empty_messages"]
    issues = []
    has_assistant = False
    for m in msgs:
        if not isinstance(m, dict):
            issues.append("message_not_object")
            continue
        # Parquet gives every message every key of the column's struct: absent = null
        m = {k: v for k, v in m.items() if v is not None}
        if "role" not in m:
            issues.append("message_missing_key:role")
        unknown = sorted(k for k in m if k not in MESSAGE_KEYS)
        issues.extend(f"message_unrecognized_key:{k}" for k in unknown)
        role = m.get("role")
        if "role" in m and role not in ROLES:
            issues.append("unrecognized_role")
        elif role in ROLES and role not in TRAINABLE_ROLES:
            issues.append("role_not_trainable")
        if role == "assistant":
            has_assistant = True
        content = m.get("content")
        if content is None and not m.get("function_call") and not m.get("tool_calls"):
            issues.append("missing_content")
        elif content is not None and not isinstance(content, str):
            issues.append("content_not_string")
        elif isinstance(content, str) and not content.strip():
            issues.append("empty_content")
        if "weight" in m and m["weight"] not in (0, 1):
            issues.append("weight_not_0_or_1")
    if not has_assistant:
        issues.append("example_missing_assistant_message")
    elif not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
        issues.append("last_message_not_assistant")
    return issues


def _dedup(items: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


def texts(rec: dict) -> list[str]:
    """The text a record carries, for duplicates, language and personal data: every
    message's content for chat, else every string value (nested ones too)."""
    msgs = rec.get("messages")
    if isinstance(msgs, list):
        return [m["content"] for m in msgs if isinstance(m, dict)
                and isinstance(m.get("content"), str)]
    out: list[str] = []
    _strings(rec, out)
    return out


def content_text(rec: dict) -> str:
    """The row's content as one string, for duplicates and language: chat contents, or
    the prompt/response fields (ids and other columns left out), or every string."""
    msgs = rec.get("messages")
    if isinstance(msgs, list):
        return "\n".join(texts(rec))
    parts = [rec[k] for k in ("system", "instruction", "input", "prompt", "question", "text",
                              "response", "completion", "answer", "teacher_response")
             if isinstance(rec.get(k), str)]
    if not parts:
        parts = [v for v in rec.values() if isinstance(v, str)]
    return "\n".join(parts)


def _strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def map_strings(value, fn):
    """value with fn applied to every string inside it (dict keys kept)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_strings(v, fn) for v in value]
    return value
