"""The HTML pieces every layer writes, in one place: ``code`` spans for a message's backticked names, the error
colour and an error line, and the muted caption under a chart. Plain strings in, HTML out; nothing is imported, so
the core's ``_repr_html_`` tables and the widgets share them."""

from __future__ import annotations

import html
import re

ERROR_COLOUR = "#b00020"  # an error or a failed check, wherever lora_nb writes one in HTML
MUTED_COLOUR = "#555"  # a caption: what a learner may not know about a chart


def code_spans(text: str) -> str:
    """``text`` as HTML, its ```name``` spans as ``<code>`` (no literal backticks in a notebook)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def error_html(text: str, tag: str = "span", lead: str = "") -> str:
    """``text`` (with ``code`` spans) in the error colour; ``lead``: a bold word before it (``training failed:``)."""
    bold = f"<b>{html.escape(lead)}</b> " if lead else ""
    return f"<{tag} style='color:{ERROR_COLOUR}'>{bold}{code_spans(text)}</{tag}>"


def error_mark(mark: str = "✗") -> str:
    """A failed check's mark, bold in the error colour."""
    return f"<b style='color:{ERROR_COLOUR}'>{html.escape(mark)}</b>"


def caption_html(note: str) -> str:
    """The sentence under a chart, small and muted."""
    return (f"<div style='font-size:12px;line-height:1.4;color:{MUTED_COLOUR};margin:2px 0 8px 8px'>"
            f"{html.escape(note)}</div>")
