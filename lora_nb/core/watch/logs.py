"""From a trainer's own logs to lora_nb's history: one record per training log, the same shape as ``run.history``.

A ``transformers.Trainer`` (and every TRL trainer, Unsloth's included) logs a dict every ``logging_steps``:
``loss``, ``learning_rate``, ``grad_norm``, ``epoch`` and whatever the trainer family adds (DPO's rewards, GRPO's
rewards per reward function, completion lengths, entropy, KL …). ``record_of`` maps it to a history record with
lora_nb's names (``step``, ``loss``, ``lr``, ``grad_norm``, ``samples_per_s``/``tokens_per_s``, ``seconds``,
``time``, ``memory_mb``, ``epoch``) and keeps every other numeric key under its own name, so nothing logged is
dropped; ``panel_of`` says which panel a kept key is drawn in. Nothing here runs a forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# the trainer's keys lora_nb's record names itself (trainer key -> record key)
RENAMED = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "epoch": "epoch"}
# keys of the run's record, never taken from a log under their own name
OWN = {"step", "loss", "lr", "grad_norm", "epoch", "time", "seconds", "samples_per_s", "tokens_per_s", "memory_mb",
       "supervised_tokens"}
# end-of-run summaries (``train_runtime`` …): not curves
SUMMARY = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}

FAMILIES = (("GRPOTrainer", "grpo"), ("DPOTrainer", "dpo"), ("SFTTrainer", "sft"))
FAMILY_NAMES = {"grpo": "GRPO", "dpo": "DPO", "sft": "SFT", "trainer": "Trainer"}


def family(trainer: Any) -> str:
    """``grpo``, ``dpo``, ``sft`` or ``trainer``: read from the class and its bases (Unsloth's subclasses too)."""
    names = {cls.__name__ for cls in type(trainer).__mro__}
    return next((fam for name, fam in FAMILIES if name in names), "trainer")


# (panel title, test on a key) per family, in the order the panels are shown; a key no panel claims is drawn in a
# panel named after its first part (``foo/bar`` -> ``foo``): unknown keys are plotted, never dropped
PANELS: dict[str, tuple[tuple[str, Any], ...]] = {
    "dpo": (("rewards: chosen, rejected, margin", lambda k: k in ("rewards/chosen", "rewards/rejected",
                                                                    "rewards/margins")),
            ("preference accuracy", lambda k: k == "rewards/accuracies"),
            ("log-probabilities", lambda k: k.startswith("logps/")),
            ("logits", lambda k: k.startswith("logits/"))),
    "grpo": (("reward mean (per reward function)", lambda k: k == "reward" or (k.startswith("rewards/")
                                                                                and k.endswith("/mean"))),
             ("reward std (per reward function)", lambda k: k == "reward_std" or (k.startswith("rewards/")
                                                                                   and k.endswith("/std"))),
             ("share of groups whose rewards are all equal", lambda k: k == "frac_reward_zero_std"),
             ("completion length", lambda k: k.startswith("completions/") and k.endswith("length")),
             ("entropy", lambda k: k == "entropy"),
             ("KL to the reference", lambda k: k == "kl")),
}


def panel_order(fam: str, titles: list[str]) -> list[str]:
    """``titles`` with the family's own panels first, in their order; the others after, as they came."""
    known = [title for title, _ in PANELS.get(fam, ())]
    return sorted(titles, key=lambda t: (known.index(t) if t in known else len(known), titles.index(t)))


def panel_of(fam: str, key: str) -> str:
    """The panel a logged key is drawn in."""
    for title, claims in PANELS.get(fam, ()):
        if claims(key):
            return title
    return key.split("/", 1)[0]


@dataclass
class Rates:
    """What the previous record left for the next one's rates: its step, time and token count."""

    step: int = 0
    time: float = 0.0
    tokens: float = 0.0  # TRL's ``num_tokens`` (tokens seen so far) at the previous record


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def record_of(logs: dict, step: int, elapsed: float, rates: Rates, samples_per_step: int,
              memory_mb: float | None, supervised_tokens: int = 0) -> dict:
    """The history record of one training log (``logs`` must hold ``loss``); updates ``rates`` for the next one."""
    steps = max(1, step - rates.step)
    dt = max(elapsed - rates.time, 1e-9)
    record: dict[str, Any] = {"step": step}
    for key, name in RENAMED.items():
        record[name] = float(logs[key]) if is_number(logs.get(key)) else None
    record.update(time=elapsed, seconds=dt / steps, samples_per_s=steps * samples_per_step / dt)
    tokens: Any = logs.get("num_tokens")  # TRL: tokens seen so far (all ranks)
    if is_number(tokens):
        record["tokens_per_s"] = (float(tokens) - rates.tokens) / dt
    if memory_mb is not None:
        record["memory_mb"] = memory_mb
    if supervised_tokens:
        record["supervised_tokens"] = supervised_tokens
    record.update({k: float(v) for k, v in logs.items() if k not in RENAMED and k not in OWN and k not in SUMMARY
                   and is_number(v)})
    rates.step, rates.time = step, elapsed
    rates.tokens = float(tokens) if is_number(tokens) else rates.tokens
    return record


def extra_keys(record: dict) -> list[str]:
    """The keys of a record beyond lora_nb's own: what the trainer family logged (drawn in panels)."""
    return [k for k in record if k not in OWN and k != "num_tokens"]
