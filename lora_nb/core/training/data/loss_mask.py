"""``loss_mask``: which tokens of the training data carry the loss, and the checks a chat dataset most often fails
(shown as text with [brackets] on trained tokens, or as HTML with each token a box, green when trained).

Rows are tokenized exactly as training tokenizes them (chat items with the chat template and the loss on the
answers; texts in full; dict rows as given, with their ``labels``). A token is trained when its label is not -100.
The checks, one line each:

- rows with nothing to learn (every label -100, before or after truncation to ``max_length``);
- answers cut by truncation (a trained token beyond ``max_length``);
- the end-of-turn / end-of-sequence token after each answer: trained, present but untrained (label -100: the
  model never learns to stop, and generates on; TRL PR #5988), or missing;
- system/user tokens trained (the prompt should be masked).

Answers are found with the chat template's assistant header (the text ``add_generation_prompt`` adds, e.g.
``<|im_start|>assistant\\n``): an answer runs from after it to the first end token. Without a chat template, or in
rows without that header, the runs of trained tokens stand for the answers and the role check is skipped.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ....errors import DataError
from ....markup import error_mark
from ...kinds import check_tokenizer
from .chat import IGNORE, has_chat_template, is_chat_item, render, tokenize_item

END_TEXTS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>", "<|end_of_text|>")


@dataclass
class Row:
    """One row as trained: token ids and labels, untruncated."""

    ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> list[bool]:
        return [label != IGNORE for label in self.labels]


@dataclass
class Check:
    """One check: its name, whether it passed, and the line that says so."""

    name: str
    ok: bool
    line: str


@dataclass
class LossMaskReport:
    """The loss mask of a dataset: the first rows as tokens marked trained or not, and the checks."""

    rows: int
    shown: list[tuple[list[str], list[bool]]]  # (token texts, trained) of the first rows
    checks: list[Check]
    max_length: int
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def __repr__(self) -> str:
        lines = [f"loss mask of {self.rows} rows (trained tokens in [brackets], max_length {self.max_length}):"]
        for i, (pieces, trained) in enumerate(self.shown):
            lines.append(f"row {i}: " + marked_text(pieces, trained))
        lines += [("✓ " if c.ok else "✗ ") + c.line for c in self.checks] + self.notes
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return loss_mask_html(self)


def marked_text(pieces: Sequence[str], trained: Sequence[bool]) -> str:
    """The tokens with each run of trained ones in [brackets]; line breaks shown as ↵."""
    out, inside = [], False
    for piece, on in zip(pieces, trained):
        if on != inside:
            out.append("[" if on else "]")
            inside = on
        out.append(piece.replace("\n", "↵"))
    return "".join(out) + ("]" if inside else "")


def rows_of(data: Any, tokenizer: Any) -> list[Row]:
    """Every row of ``data`` tokenized as training would, before truncation."""
    if type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "to_list"):
        data = data.to_list()
    if isinstance(data, (str, bytes)) or not isinstance(data, Sequence) or not len(data):
        raise DataError("the loss mask needs a non-empty list of rows: chat items, texts or dicts with input_ids")
    template = has_chat_template(tokenizer)
    rows = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            ids = list(tokenizer(item)["input_ids"])
            rows.append(Row(ids, ids))
        elif is_chat_item(item):
            rows.append(Row(*tokenize_item(item, i, tokenizer, template)))
        elif isinstance(item, Mapping) and "input_ids" in item:
            ids = [int(t) for t in _as_list(item["input_ids"])]
            labels = [int(t) for t in _as_list(item.get("labels", ids))]
            rows.append(Row(ids, labels))
        else:
            raise DataError(f"row {i} is neither a text, chat data nor a dict with input_ids")
    return rows


def _as_list(value: Any) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def end_ids(tokenizer: Any) -> set[int]:
    """Ids that end an answer: end-of-sequence, and the end-of-turn token the chat template writes."""
    ids = {int(tokenizer.eos_token_id)} if getattr(tokenizer, "eos_token_id", None) is not None else set()
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    ids |= {vocab[t] for t in END_TEXTS if t in vocab and t in str(getattr(tokenizer, "chat_template", "") or "")}
    return ids


def assistant_header(tokenizer: Any) -> list[int]:
    """Token ids of what the chat template puts before an answer ([] without a template)."""
    if not has_chat_template(tokenizer):
        return []
    probe = [{"role": "user", "content": "x"}]
    try:
        before, after = render(tokenizer, probe, False), render(tokenizer, probe, True)
    except DataError:
        return []
    header = after[len(before):] if after.startswith(before) else ""
    return list(tokenizer(header, add_special_tokens=False)["input_ids"]) if header.strip() else []


def answers(row: Row, header: list[int], ends: set[int], blank: Callable[[int], bool] = lambda t: False,
            ) -> tuple[list[tuple[int, int]], bool]:
    """Answer spans ``(start, stop)``: after each assistant header to its end token (inclusive, with the blank
    tokens the template writes after it), else the runs of trained tokens; and whether the header was found."""
    n, k, spans, i = len(row.ids), len(header), [], 0
    while header and i + k <= n:
        if row.ids[i:i + k] == header:
            stop = next((j + 1 for j in range(i + k, n) if row.ids[j] in ends), n)
            while stop < n and blank(row.ids[stop]):
                stop += 1
            spans.append((i + k, stop))
            i = stop
        else:
            i += 1
    if spans:
        return spans, True
    trained, i = row.trained, 0
    while i < n:
        if trained[i]:
            j = i
            while j < n and trained[j]:
                j += 1
            stop = j + 1 if j < n and row.ids[j] in ends else j  # an untrained end token right after belongs to it
            spans.append((i, stop))
            i = stop
        else:
            i += 1
    return spans, False


def _blank(tokenizer: Any, token: int) -> bool:
    return not tokenizer.decode([token]).strip()


def end_state(row: Row, span: tuple[int, int], ends: set[int], blank: Callable[[int], bool]) -> str:
    """"trained", "untrained" (present, label -100) or "missing" for the end token of one answer."""
    start, stop = span
    last = stop - 1
    while last > start and row.ids[last] not in ends and blank(row.ids[last]):
        last -= 1  # whitespace the template writes after the end token
    if row.ids[last] not in ends:
        return "missing"
    return "trained" if row.labels[last] != IGNORE else "untrained"


def loss_mask(data: Any, tokenizer: Any, n: int = 3, max_length: int = 512) -> LossMaskReport:
    """The loss mask of ``data`` as training sees it: the first ``n`` rows token by token, and the checks."""
    if tokenizer is None:
        raise DataError("the loss mask needs the tokenizer: pass tokenizer=… (`--tokenizer VAR`)")
    check_tokenizer(tokenizer)
    rows = rows_of(data, tokenizer)
    header, ends = assistant_header(tokenizer), end_ids(tokenizer)
    blank = functools.lru_cache(maxsize=None)(functools.partial(_blank, tokenizer))
    counts = dict(empty=0, empty_cut=0, cut=0, answers=0, trained=0, untrained=0, missing=0, prompt_rows=0,
                  roles_known=0, plain=0)
    for row in rows:
        trained = row.trained
        counts["plain"] += all(trained)
        if not any(trained):
            counts["empty"] += 1
        elif not any(trained[:max_length]):
            counts["empty_cut"] += 1
        if any(trained[max_length:]):
            counts["cut"] += 1
        spans, known = answers(row, header, ends, blank)
        counts["roles_known"] += known
        inside = {i for a, b in spans for i in range(a, b)}
        if known and any(t and i not in inside for i, t in enumerate(trained)):
            counts["prompt_rows"] += 1
        for span in spans:
            counts["answers"] += 1
            counts[end_state(row, span, ends, blank)] += 1
    shown = [([tokenizer.decode([t]) for t in r.ids[:max_length]], r.trained[:max_length]) for r in rows[:n]]
    return LossMaskReport(len(rows), shown, _checks(counts, len(rows), max_length), max_length)


def _checks(c: dict, total: int, max_length: int) -> list[Check]:
    empty = c["empty"] + c["empty_cut"]
    checks = [Check("empty", empty == 0, f"rows with nothing to learn: {empty} of {total}"
                    + (f" ({c['empty_cut']} only after truncation to {max_length} tokens)" if c["empty_cut"] else "")
                    + (" — training refuses data where every row is so" if empty == total else "")),
              Check("truncated", c["cut"] == 0, f"answers cut by truncation at {max_length} tokens: {c['cut']} rows")]
    n = c["answers"]
    line = f"end token after each answer: trained in {c['trained']} of {n} answers"
    if c["untrained"]:
        line += f"; present but untrained (label -100) in {c['untrained']}: the model never learns to stop"
    if c["missing"]:
        line += f"; missing after {c['missing']}"
    if c["plain"] == total:
        line, n = "end token: plain text (every token trained), no answers to end", -1
    checks.append(Check("end", n < 0 or (n > 0 and c["trained"] == n), line))
    if c["roles_known"]:
        line = (f"system/user tokens masked in all {c['roles_known']} chat rows" if not c["prompt_rows"] else
                f"system/user tokens trained in {c['prompt_rows']} of {c['roles_known']} chat rows (mask the prompt: "
                "labels -100 outside the answers)")
        checks.append(Check("prompt", c["prompt_rows"] == 0, line))
    else:
        checks.append(Check("prompt", True, "system/user tokens: no chat turns found (plain text: every token is "
                                            "trained, as intended for language modelling)"))
    return checks


TRAINED = "background:#c7e9c0;border:1px solid #41ab5d"
MASKED = "background:#f0f0f0;border:1px solid #d9d9d9;color:#777"


def token_html(piece: str, trained: bool) -> str:
    """One token as a box (line breaks shown as ↵, spaces as ·)."""
    text = html.escape(piece.replace("\n", "↵").replace(" ", "·")) or "∅"
    style = TRAINED if trained else MASKED
    return f"<span style='{style};border-radius:3px;padding:0 1px;margin:1px;display:inline-block'>{text}</span>"


def loss_mask_html(report: LossMaskReport) -> str:
    """A ``LossMaskReport``: a legend, the first rows token by token, and one line per check."""
    legend = (f"<span style='{TRAINED};padding:0 4px'>trained (label = token)</span> "
              f"<span style='{MASKED};padding:0 4px'>masked (label -100)</span>")
    rows = "".join(f"<div style='margin:4px 0;font-family:monospace;font-size:12px;line-height:1.9'><b>row {i}</b> "
                   + "".join(token_html(p, t) for p, t in zip(pieces, trained)) + "</div>"
                   for i, (pieces, trained) in enumerate(report.shown))
    marks = {True: "✓", False: error_mark()}
    checks = "".join(f"<div>{marks[c.ok]} {html.escape(c.line)}</div>" for c in report.checks)
    notes = "".join(f"<div>{html.escape(n)}</div>" for n in report.notes)
    return (f"<div><b>loss mask of {report.rows} rows</b> (max_length {report.max_length}) {legend}{rows}"
            f"{checks}{notes}</div>")
