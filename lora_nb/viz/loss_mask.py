"""The loss mask as HTML: each token a small box, green when it carries the loss, grey when masked (-100)."""

from __future__ import annotations

import html
from typing import Any

TRAINED = "background:#c7e9c0;border:1px solid #41ab5d"
MASKED = "background:#f0f0f0;border:1px solid #d9d9d9;color:#777"


def token_html(piece: str, trained: bool) -> str:
    """One token as a box (line breaks shown as ↵, spaces as ·)."""
    text = html.escape(piece.replace("\n", "↵").replace(" ", "·")) or "∅"
    style = TRAINED if trained else MASKED
    return f"<span style='{style};border-radius:3px;padding:0 1px;margin:1px;display:inline-block'>{text}</span>"


def loss_mask_html(report: Any) -> str:
    """A ``LossMaskReport``: a legend, the first rows token by token, and one line per check."""
    legend = (f"<span style='{TRAINED};padding:0 4px'>trained (label = token)</span> "
              f"<span style='{MASKED};padding:0 4px'>masked (label -100)</span>")
    rows = "".join(f"<div style='margin:4px 0;font-family:monospace;font-size:12px;line-height:1.9'><b>row {i}</b> "
                   + "".join(token_html(p, t) for p, t in zip(pieces, trained)) + "</div>"
                   for i, (pieces, trained) in enumerate(report.shown))
    marks = {True: "✓", False: "<b style='color:#c00'>✗</b>"}
    checks = "".join(f"<div>{marks[c.ok]} {html.escape(c.line)}</div>" for c in report.checks)
    notes = "".join(f"<div>{html.escape(n)}</div>" for n in report.notes)
    return (f"<div><b>loss mask of {report.rows} rows</b> (max_length {report.max_length}) {legend}{rows}"
            f"{checks}{notes}</div>")
