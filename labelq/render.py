"""A compact, deterministic text rendering of any session JSON. Pure functions.

Customers' schemas differ, so nothing is assumed but shapes: the events are
the first list of objects (or ``events_field``); an event's kind, url, target
and value are found among common field names. Timestamps and ids are noise
and dropped, consecutive repeats collapse to ``(x3)``, values are clipped,
and a session over the token budget keeps its start and its end with a marker
for what was cut; session-level fields take at most a quarter of the budget.
The ground-truth field is never rendered.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from labelq.special_tokens import neutralise

if TYPE_CHECKING:
    from labelq.settings import Settings
    from labelq.spec import TaskSpec

KIND_KEYS = ("type", "event", "event_type", "action", "kind", "name")
URL_KEYS = ("url", "page", "path", "href", "location", "page_url", "uri")
TARGET_KEYS = ("target", "selector", "element", "css", "xpath", "button", "element_id")
VALUE_KEYS = ("value", "text", "query", "q", "label", "title", "message", "direction", "state",
              "depth_pct", "amount")
_NOISE_KEY = re.compile(r"(^|_)(ts|time|timestamp|date|at|id|uuid|ip|user_agent|ua)$|_at$|^@", re.I)
_SPACE = re.compile(r"\s+")
CHARS_PER_TOKEN = 4  # a stable, model-free estimate; budgets are soft anyway


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def _clip(value: Any, max_chars: int) -> str:
    text = _SPACE.sub(" ", str(value)).strip()
    text = text.replace("<session>", "<session >").replace("</session>", "</session >")
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _first(event: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for key in keys:
        if key in event and event[key] not in (None, "", [], {}):
            return key, event[key]
    return None, None


def find_events(session: dict[str, Any], field: str | None) -> tuple[str | None, list[Any]]:
    if field:
        node: Any = session
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return field, node if isinstance(node, list) else []
    for key, value in session.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:5]):
            return key, value
    return None, []


def render_event(event: Any, max_chars: int) -> str:
    if not isinstance(event, dict):
        return _clip(event, max_chars)
    parts: list[str] = []
    used: set[str] = set()
    for keys in (KIND_KEYS, URL_KEYS, TARGET_KEYS):
        key, value = _first(event, keys)
        if key is not None:
            used.add(key)
            parts.append(_clip(value, max_chars))
    key, value = _first(event, VALUE_KEYS)
    if key is not None:
        used.add(key)
        parts.append(f'"{_clip(value, max_chars)}"')
    for extra in sorted(set(event) - used):  # anything else that is short and not noise
        val = event[extra]
        if not _NOISE_KEY.search(extra) and isinstance(val, (str, int, float, bool)) and val != "":
            parts.append(f"{extra}={_clip(val, max_chars // 2)}")
    return " ".join(parts) if parts else "{}"


def render_meta(session: dict[str, Any], skip: set[str], max_chars: int, max_tokens: int | None = None) -> str:
    """``key=value`` of the session's scalar fields; past ``max_tokens``, a count of what was left out."""
    items: list[str] = []

    def walk(prefix: str, node: dict[str, Any], depth: int) -> None:
        for key in sorted(node):
            if key in skip or _NOISE_KEY.search(key):
                continue
            value = node[key]
            name = f"{prefix}{key}"
            if isinstance(value, dict) and depth < 1:
                walk(f"{name}.", value, depth + 1)
            elif isinstance(value, (str, int, float, bool)) and value != "":
                items.append(f"{name}={_clip(value, max_chars // 2)}")

    walk("", session, 0)
    if max_tokens is not None and estimate_tokens(" ".join(items)) > max_tokens:
        budget, kept = max_tokens - 8, []
        for item in items:
            budget -= estimate_tokens(item) + 1
            if budget < 0:
                break
            kept.append(item)
        items = [*kept, f"(+{len(items) - len(kept)} more fields)"]
    return " ".join(items)


def collapse_repeats(lines: list[str]) -> list[str]:
    out: list[str] = []
    count = 0
    for i, line in enumerate(lines):
        count += 1
        if i + 1 < len(lines) and lines[i + 1] == line:
            continue
        out.append(f"{line} (x{count})" if count > 1 else line)
        count = 0
    return out


def fit_budget(lines: list[str], head: str, max_tokens: int) -> list[str]:
    """Keep the start and the end; say how many events were cut from the middle."""
    total = estimate_tokens(head) + sum(estimate_tokens(line) + 1 for line in lines)
    if total <= max_tokens:
        return lines
    budget = max_tokens - estimate_tokens(head) - 8
    keep_head: list[str] = []
    keep_tail: list[str] = []
    left, right = 0, len(lines) - 1
    while left <= right and budget > 0:
        take_left = len(keep_head) <= len(keep_tail)
        line = lines[left] if take_left else lines[right]
        cost = estimate_tokens(line) + 1
        if cost > budget:
            break
        budget -= cost
        if take_left:
            keep_head.append(line)
            left += 1
        else:
            keep_tail.append(line)
            right -= 1
    cut = len(lines) - len(keep_head) - len(keep_tail)
    return [*keep_head, f"... ({cut} events cut) ...", *reversed(keep_tail)]


def render_session(
    session: dict[str, Any], *, max_tokens: int = 600, max_value_chars: int = 80,
    events_field: str | None = None, hidden_fields: tuple[str, ...] = ("_reference",),
    id_field: str = "session_id",
) -> str:
    """The text a model sees for ``session``: metadata line, then numbered events."""
    visible = {k: v for k, v in session.items() if k not in hidden_fields}
    key, events = find_events(visible, events_field)
    skip = {key or "", id_field.split(".")[0]}
    head = render_meta(visible, skip, max_value_chars, max_tokens // 4)  # the events get the rest
    lines = collapse_repeats([render_event(e, max_value_chars) for e in events])
    lines = fit_budget(lines, head, max_tokens)
    numbered = [line if line.startswith("... (") else f"{i}. {line}" for i, line in
                enumerate(lines, 1)]
    return neutralise("\n".join([head, *numbered]) if head else "\n".join(numbered))


def render_for_task(spec: TaskSpec, settings: Settings, payload: dict[str, Any]) -> str:
    """The rendering every model sees for ``spec``'s task: teacher, training and serving alike."""
    return render_session(payload, max_tokens=spec.render.max_tokens,
                          max_value_chars=spec.render.max_value_chars,
                          events_field=spec.render.events_field,
                          hidden_fields=(settings.reference_field,),
                          id_field=settings.session_id_field)
