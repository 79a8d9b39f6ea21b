"""Reading the lifecycle widget as a frontend does: from the comm messages a kernel sent."""

from __future__ import annotations

import re
from typing import Any

_BOLD = re.compile(r'flame-step-(\w+)" style="font-weight:bold')


def html_values(comm_log: list[dict[str, Any]]) -> list[str]:
    """Every HTML the cell views showed, in order: their widget models' values (opens and
    updates) and their display outputs' ``text/html`` (before the widget, or without one)."""
    out = []
    for msg in comm_log:
        data = msg["content"].get("data", {})
        if msg["msg_type"] in ("display_data", "update_display_data"):
            value = data.get("text/html")
            if "application/vnd.jupyter.widget-view+json" in data and len(out):
                continue  # the same state as the widget's model
        else:
            value = data.get("state", {}).get("value")
        if isinstance(value, str) and "flame-cell" in value:
            out.append(value)
    return out


def steps(values: list[str]) -> list[str]:
    """The step each HTML value shows (``done``/``failed``/``cancelled`` once final),
    repeats collapsed."""
    seen: list[str] = []
    for v in values:
        m = _BOLD.search(v)
        step = m.group(1) if m else next(
            (s for s in ("done", "failed", "cancelled") if f"flame-{s}" in v), "?")
        if not seen or seen[-1] != step:
            seen.append(step)
    return seen


def cancel_button(comm_log: list[dict[str, Any]]) -> str | None:
    """The comm id of the newest Cancel button."""
    found = None
    for msg in comm_log:
        if msg["msg_type"] != "comm_open":
            continue
        state = msg["content"]["data"].get("state", {})
        if state.get("_model_name") == "ButtonModel" and state.get("description") == "Cancel":
            found = msg["content"]["comm_id"]
    return found


def click(kc: Any, comm_id: str) -> None:
    """Send a click on the shell channel, as the browser's widget manager does."""
    msg = kc.session.msg("comm_msg", {"comm_id": comm_id,
                                      "data": {"method": "custom", "content": {"event": "click"}}})
    kc.shell_channel.send(msg)


def models(comm_log: list[dict[str, Any]], model: str) -> list[tuple[str, dict[str, Any]]]:
    """(comm id, opening state) of every widget of ``model`` (e.g. ``ButtonModel``)."""
    return [(m["content"]["comm_id"], m["content"]["data"]["state"]) for m in comm_log
            if m["msg_type"] == "comm_open"
            and m["content"]["data"].get("state", {}).get("_model_name") == model]


def set_state(kc: Any, comm_id: str, **state: Any) -> None:
    """Change a widget's value as the browser does (an ``update`` comm message)."""
    kc.shell_channel.send(kc.session.msg("comm_msg", {
        "comm_id": comm_id, "data": {"method": "update", "state": state, "buffer_paths": []}}))
