"""The output contract: normalise an answer where that is safe, then validate it. Pure.

Safe normalisations never change meaning: surrounding white space and quotes,
a leading "Label:"-style prefix, markdown emphasis, one trailing full stop,
runs of spaces. Anything else that breaks the contract is reported with a
short reason (``empty``, ``multiline``, ``refusal``, ``too_many_words``,
``too_many_chars``, ``invalid_json``, ``schema_violation``) so the teacher can
ask for one repair and, failing that, dead-letter the raw answer.
"""

from __future__ import annotations

import copy
import re
from typing import Any, NamedTuple

import orjson

from labelq.spec import Contract, TaskSpec

_PREFIX = re.compile(r"^\s*(label|answer|sentence|summary|output|journey|description)\s*[:\-\u2013]\s*", re.I)
# Straight, typographic and guillemet quotes that models put around answers.
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_REFUSAL = re.compile(
    r"^(i'?m sorry|sorry,|i cannot|i can'?t|i am unable|i'm unable|as an ai|i won'?t)", re.I)


class Verdict(NamedTuple):
    ok: bool
    label: str  # the normalised answer (valid or not)
    reason: str | None
    words: int


def normalise_text(answer: str) -> str:
    text = answer.strip()
    for _ in range(2):  # quotes around a prefixed answer, or a prefix before a quoted one
        text = _PREFIX.sub("", text).strip()
        text = text.replace("**", "").replace("__", "").strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return re.sub(r"[ \t]+", " ", text)



def normalise_for_match(text: str) -> str:
    """What "exact match" compares: the normalised answer, lower case, letters, digits and spaces only
    (the trainer's evaluation and the live student-teacher agreement use the same)."""
    return re.sub(r"[^a-z0-9 ]+", "", normalise_text(text).lower()).strip()

def check_text(answer: str, contract: Contract) -> Verdict:
    text = normalise_text(answer)
    words = len(text.split())
    if not text:
        return Verdict(False, text, "empty", 0)
    if "\n" in text or "\r" in text:
        return Verdict(False, text, "multiline", words)
    if _REFUSAL.match(text):
        return Verdict(False, text, "refusal", words)
    if contract.max_words is not None and words > contract.max_words:
        return Verdict(False, text, "too_many_words", words)
    if contract.max_chars is not None and len(text) > contract.max_chars:
        return Verdict(False, text, "too_many_chars", words)
    return Verdict(True, text, None, words)


def check_json(answer: str, contract: Contract) -> Verdict:
    import jsonschema

    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Verdict(False, text, "invalid_json", 0)
    errors = sorted(jsonschema.Draft202012Validator(contract.json_schema or {}).iter_errors(value),
                    key=lambda e: list(e.path))
    canonical = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if errors:
        return Verdict(False, canonical, "schema_violation", 0)
    if contract.max_chars is not None and len(canonical) > contract.max_chars:
        return Verdict(False, canonical, "too_many_chars", 0)
    return Verdict(True, canonical, None, 0)


def check(answer: str, contract: Contract) -> Verdict:
    """Normalise and validate one answer against a task's contract."""
    if contract.json_schema is not None:
        return check_json(answer, contract)
    return check_text(answer, contract)


def repair_instruction(verdict: Verdict, contract: Contract) -> str:
    """The one follow-up message sent when an answer broke the contract."""
    if contract.json_schema is not None:
        return ("Your answer was not valid JSON for the required schema "
                f"({verdict.reason}). Reply with only the JSON object, nothing else.")
    limits = []
    if contract.max_words:
        limits.append(f"at most {contract.max_words} words")
    if contract.max_chars:
        limits.append(f"at most {contract.max_chars} characters")
    return (f"Your answer broke the rules ({verdict.reason}). Reply with only the label: "
            f"one line, {' and '.join(limits)}, no quotes, no prefix.")


def response_format(name: str, json_schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's ``response_format`` for a JSON schema (strict where the schema allows it: OpenAI's strict mode
    wants every object closed and every property required)."""
    return {"type": "json_schema", "json_schema": {"name": name[:64] or "label", "schema": json_schema,
                                                   "strict": strict_compatible(json_schema)}}


def strict_compatible(schema: Any) -> bool:
    """True when every object in ``schema`` has ``additionalProperties: false`` and requires all its properties."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False or set(schema.get("required", [])) != set(props):
                return False
        return all(strict_compatible(v) for k, v in schema.items() if k != "required")
    if isinstance(schema, list):
        return all(strict_compatible(v) for v in schema)
    return True


def spec_response_format(spec: TaskSpec) -> dict[str, Any] | None:
    """The ``response_format`` a task's requests carry: its JSON schema's, or None for a text contract."""
    schema = spec.contract.json_schema
    return None if schema is None else response_format(spec.name, schema)


def decoding_schema(schema: dict[str, Any], max_new_tokens: int) -> dict[str, Any]:
    """``schema`` with every string capped (``maxLength``) so that a whole answer fits ``max_new_tokens``:
    under structured decoding an answer cut off by the token limit is unfinished JSON, whatever the grammar.

    A token carries at least one character of ASCII text, so the room left after the keys and punctuation
    (counted in characters) is shared between the string fields; a smaller ``maxLength`` in the schema wins.
    The ``vllm`` backend decodes without free whitespace between JSON tokens, which this count assumes.
    """
    bounded = copy.deepcopy(schema)
    strings: list[dict[str, Any]] = []
    keys_chars = 2

    def walk(node: Any) -> None:
        nonlocal keys_chars
        if isinstance(node, dict):
            kinds = node.get("type")
            if kinds == "string" or (isinstance(kinds, list) and "string" in kinds):
                strings.append(node)
            for key, child in (node.get("properties") or {}).items():
                keys_chars += len(key) + 7  # "key": "", plus a space
                walk(child)
            for name in ("items", "anyOf", "oneOf", "allOf"):
                walk(node.get(name))
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(bounded)
    cap = max(1, (max_new_tokens - keys_chars) // max(1, len(strings)))
    for node in strings:
        node["maxLength"] = min(int(node.get("maxLength", cap)), cap)
    return bounded
