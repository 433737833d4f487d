"""What ``vs_full`` measured: ``Arm`` (one training of one arm) and ``VsFullResult``, laid out as the
LoRA explainer's table — scope of updates, efficiency, data, overfitting, performance — where every
cell is a measured value and every reading is derived from the two numbers beside it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass
class Arm:
    """One arm's measurements (sizes in bytes, times in seconds) and its training history."""

    name: str  # "lora" or "full"
    params_updated: int
    params_total: int
    state_bytes: int  # parameters + gradients + AdamW moments + step tensors
    memory_start: int
    memory_peak: int
    memory_kind: str  # what memory_peak measures
    step_seconds: float  # median wall time of an optimizer step
    train_loss_last: float  # mean loss of the last steps (in train mode, on the batches trained on)
    train_loss: float  # one pass over the whole training data after training (eval mode)
    eval_loss: float | None
    train_accuracy: float | None  # classifiers: argmax of the logits vs integer targets
    eval_accuracy: float | None
    checkpoint_bytes: int | None  # size of the file written (None: not saved, sweep points)
    checkpoint_file: str
    history: list[dict] = field(repr=False, default_factory=list)
    evals: list[dict] = field(repr=False, default_factory=list)
    size: int | None = None  # training-set size of a sweep point
    where: str = ""  # device the arm trained on
    targets: list[str] = field(repr=False, default_factory=list)  # modules the LoRA arm adapted

    @property
    def percent(self) -> float:
        return 100.0 * self.params_updated / max(self.params_total, 1)

    @property
    def memory_added(self) -> int:
        return max(0, self.memory_peak - self.memory_start)

    @property
    def gap(self) -> float | None:
        """Generalization gap: eval loss − train loss (both full passes after training)."""
        return None if self.eval_loss is None else self.eval_loss - self.train_loss


class Row(NamedTuple):
    aspect: str
    measure: str
    lora: str
    full: str
    reading: str


def fmt_bytes(n: float | None) -> str:
    """``12.3 KB`` (powers of 1024)."""
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def fmt_loss(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def fmt_acc(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def times(a: float, b: float) -> str:
    """How ``a`` relates to ``b``: "25× smaller", "1.3× larger", "the same size"."""
    if a == b:
        return "the same size as"
    if a == 0 or b == 0:
        return "smaller than" if a < b else "larger than"
    ratio = b / a if a < b else a / b
    return f"{ratio:.3g}× {'smaller' if a < b else 'larger'} than"


def compare(what: str, lora: float | None, full: float | None, higher_is_better: bool = False,
            fmt=fmt_loss, tol: float = 0.02) -> str:
    """"LoRA has the lower eval loss (0.31 vs 0.45)", or "about the same …" within ``tol`` (relative)."""
    if lora is None or full is None:
        return "not measured"
    if abs(lora - full) <= tol * max(abs(lora), abs(full)):
        return f"about the same {what} ({fmt(lora)} vs {fmt(full)})"
    lora_wins = (lora > full) == higher_is_better
    word = "higher" if higher_is_better else "lower"
    who, mine, other = ("LoRA", lora, full) if lora_wins else ("full fine-tuning", full, lora)
    return f"{who} has the {word} {what} ({fmt(mine)} vs {fmt(other)})"


@dataclass
class VsFullResult:
    """LoRA vs full fine-tuning, measured: both arms, the data-size sweep, and the table of readings."""

    lora: Arm
    full: Arm
    sweep: list[Arm]  # one Arm per (size, arm), sizes ascending
    settings: dict[str, Any]  # per arm: the TrainSettings it trained with
    options: Any  # the LoRA arm's AttachOptions
    directions: Any = None  # directions.Directions: subspace overlaps of the two arms' updates per layer

    @property
    def sizes(self) -> list[int]:
        return sorted({a.size for a in self.sweep if a.size is not None})

    def sweep_arm(self, arm: str, size: int) -> Arm:
        return next(a for a in self.sweep if a.name == arm and a.size == size)

    def rows(self) -> list[Row]:
        """The table: one row per measurement, grouped by the explainer's aspects."""
        return [*self._scope(), *self._efficiency(), *self._data(), *self._overfitting(), *self._performance(),
                *self._directions()]

    def _directions(self) -> list[Row]:
        if not self.directions:
            return []
        from .directions import overlap

        layers = list(self.directions.values())
        left = sum(overlap(d.left) for d in layers) / len(layers)
        chance = sum(d.random_left for d in layers) / len(layers)
        reading = (f"LoRA's top-r output directions overlap full fine-tuning's by {left:.2f} (mean cos², "
                   f"{len(layers)} layers; a random subspace: {chance:.2f})")
        return [Row("directions", "overlap of top-r update subspaces (output side)", f"{left:.3f}",
                    f"random: {chance:.3f}", reading)]

    def _scope(self) -> list[Row]:
        lo, fu = self.lora, self.full
        reading = (f"LoRA updates {lo.percent:.3g}% of the weights ({lo.params_updated:,} of {lo.params_total:,}); "
                   f"full fine-tuning {fu.percent:.3g}%")
        return [Row("scope of updates", "parameters updated", f"{lo.params_updated:,} ({lo.percent:.3g}%)",
                    f"{fu.params_updated:,} ({fu.percent:.3g}%)", reading)]

    def _efficiency(self) -> list[Row]:
        lo, fu, aspect = self.lora, self.full, "efficiency (compute & memory)"
        rows = [Row(aspect, "trainable state: params + grads + AdamW moments", fmt_bytes(lo.state_bytes),
                    fmt_bytes(fu.state_bytes), f"LoRA's trainable state is {times(lo.state_bytes, fu.state_bytes)} "
                    "full fine-tuning's")]
        if lo.memory_added == fu.memory_added == 0:
            memory = "neither arm grew memory measurably (below the sampling's resolution)"
        else:
            memory = f"LoRA's peak growth is {times(lo.memory_added, fu.memory_added)} full fine-tuning's"
        rows.append(Row(aspect, f"peak memory above start ({lo.memory_kind})", "+" + fmt_bytes(lo.memory_added),
                        "+" + fmt_bytes(fu.memory_added), memory))
        a, b = lo.step_seconds, fu.step_seconds
        if abs(a - b) <= 0.02 * max(a, b):
            speed = "about the same time per step"
        elif a < b:
            speed = f"LoRA steps are {b / a:.3g}× faster"
        else:
            speed = f"LoRA steps are {a / b:.3g}× slower here (the frozen base still runs forward and backward)"
        rows.append(Row(aspect, "time per step (median)", f"{a * 1e3:.3g} ms", f"{b * 1e3:.3g} ms", speed))
        rows.append(Row(aspect, "checkpoint on disk", f"{fmt_bytes(lo.checkpoint_bytes)} ({lo.checkpoint_file})",
                        f"{fmt_bytes(fu.checkpoint_bytes)} ({fu.checkpoint_file})",
                        f"the adapter file is {times(lo.checkpoint_bytes or 0, fu.checkpoint_bytes or 0)} "
                        "the full model's"))
        return rows

    def _by_size(self, arm: str, value) -> str:
        return " · ".join(f"{n}: {value(self.sweep_arm(arm, n))}" for n in self.sizes)

    def _data(self) -> list[Row]:
        if not self.sizes:
            return [Row("data", "eval loss by training-set size", "—", "—",
                        "not measured: pass `sizes=[25, 50, 100]` with `eval_data=…`")]
        wins = [n for n in self.sizes if self.sweep_arm("lora", n).eval_loss < self.sweep_arm("full", n).eval_loss]
        reading = (f"LoRA has the lower eval loss at {len(wins)} of {len(self.sizes)} sizes"
                   + (f" ({', '.join(map(str, wins))})" if wins else ""))
        rows = [Row("data", "eval loss by training-set size", self._by_size("lora", lambda a: fmt_loss(a.eval_loss)),
                    self._by_size("full", lambda a: fmt_loss(a.eval_loss)), reading)]
        small = self.sizes[0]
        lo, fu = self.sweep_arm("lora", small), self.sweep_arm("full", small)
        if lo.eval_accuracy is not None:
            rows.append(Row("data", "eval accuracy by training-set size",
                            self._by_size("lora", lambda a: fmt_acc(a.eval_accuracy)),
                            self._by_size("full", lambda a: fmt_acc(a.eval_accuracy)),
                            "at the smallest size: " + compare("eval accuracy", lo.eval_accuracy, fu.eval_accuracy,
                                                               True, fmt_acc)))
        return rows

    def _overfitting(self) -> list[Row]:
        lo, fu, aspect = self.lora, self.full, "overfitting"
        if lo.gap is None:
            return [Row(aspect, "generalization gap (eval − train loss)", "—", "—",
                        "not measured: pass `eval_data=…`")]
        rows = [Row(aspect, "generalization gap (eval − train loss)", fmt_loss(lo.gap), fmt_loss(fu.gap),
                    compare("gap", lo.gap, fu.gap).replace("has the lower gap", "has the smaller gap"))]
        if self.sizes:
            n = self.sizes[0]
            a, b = self.sweep_arm("lora", n).gap, self.sweep_arm("full", n).gap
            rows.append(Row(aspect, f"gap with {n} training examples", fmt_loss(a), fmt_loss(b),
                            compare("gap", a, b).replace("has the lower gap", "has the smaller gap")))
        return rows

    def _performance(self) -> list[Row]:
        lo, fu, aspect = self.lora, self.full, "performance"
        rows = [Row(aspect, "train loss (a pass over the training data)", fmt_loss(lo.train_loss),
                    fmt_loss(fu.train_loss), compare("train loss", lo.train_loss, fu.train_loss))]
        if lo.eval_loss is not None:
            rows.append(Row(aspect, "eval loss", fmt_loss(lo.eval_loss), fmt_loss(fu.eval_loss),
                            compare("eval loss", lo.eval_loss, fu.eval_loss)))
        if lo.eval_accuracy is not None:
            rows.append(Row(aspect, "eval accuracy", fmt_acc(lo.eval_accuracy), fmt_acc(fu.eval_accuracy),
                            compare("eval accuracy", lo.eval_accuracy, fu.eval_accuracy, True, fmt_acc)))
        return rows

    def headline(self) -> str:
        s, o = self.settings["lora"], self.options
        return (f"LoRA (r={o.r}, alpha={o.alpha:g}, {len(self.lora.targets)} modules, lr {s.lr:g}) vs full "
                f"fine-tuning (lr {self.settings['full'].lr:g}): {s.steps} steps × batch {s.batch_size}, seed "
                f"{s.seed}, same starting weights and batches, on {self.lora.where}")

    def notes(self) -> list[str]:
        notes = [f"losses after training: a pass over the data in eval mode; time per step: median over "
                 f"{len(self.lora.history)} steps; trainable state: exact, from the parameters' dtypes; "
                 "\"about the same\": within 2% of each other"]
        if "RSS" in self.lora.memory_kind:
            notes.append("memory on CPU: growth of the process's resident memory while an arm ran (sampled, after "
                         "handing freed memory back to the system; a coarse signal for small models)")
        notes.append("peak memory includes activations and the loop's copy of the trained parameters (kept to "
                     "undo a failed step); both arms warmed up for 2 unmeasured steps first")
        return notes

    def __str__(self) -> str:
        rows = [Row("aspect", "measure", "LoRA", "full fine-tuning", "reading"), *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [self.headline()]
        for i, row in enumerate(rows):
            aspect = row.aspect if i == 0 or row.aspect != rows[i - 1].aspect else ""
            cells = [aspect, *row[1:4]]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + row.reading)
        return "\n".join(lines + self.notes())

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc, rows = html.escape, self.rows()
        body = []
        for i, row in enumerate(rows):
            span = sum(1 for r in rows if r.aspect == row.aspect)
            first = i == 0 or rows[i - 1].aspect != row.aspect
            aspect = f"<th rowspan='{span}' style='text-align:left'>{esc(row.aspect)}</th>" if first else ""
            body.append(f"<tr>{aspect}" + "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in row[1:])
                        + "</tr>")
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("aspect", "measure", "LoRA", "full fine-tuning", "reading"))
        notes = "".join(f"<div><small>{esc(n)}</small></div>" for n in self.notes())
        return (f"<div class='lora-nb-vs-full'><b>{esc(self.headline())}</b><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>{notes}</div>")
