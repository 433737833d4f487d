"""The capacity gauge: trainable LoRA parameters against the supervised (loss-bearing) tokens they learn from.

Rule of thumb, from LoRA Without Regret (Schulman et al., Thinking Machines, 2025,
https://thinkingmachines.ai/blog/lora/): LoRA matches full fine-tuning until the data holds more than its
parameters can store; it "runs out of capacity" when its parameters fall well below the number of supervised
tokens. The paper gives no exact threshold; lora_nb draws the line at one parameter per supervised token
(``RULE``) and reads a run far below it as capacity-bound — a reading, not the paper's number.
"""

from __future__ import annotations

from dataclasses import dataclass

RULE = 1.0  # parameters per supervised token on the rule-of-thumb line
RULE_TEXT = ("rule of thumb: ≥ 1 trainable parameter per supervised token; well below it LoRA runs out of "
             "capacity (after Schulman et al. 2025, LoRA Without Regret)")


def short_count(n: float) -> str:
    """``1.2M``, ``34k``, ``512``."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


@dataclass(frozen=True)
class Capacity:
    """Trainable parameters and the supervised tokens seen: their ratio and where it stands against the rule."""

    params: int
    tokens: int

    @property
    def ratio(self) -> float | None:
        """Parameters per supervised token (None before any token was seen)."""
        return self.params / self.tokens if self.tokens else None

    @property
    def below_rule(self) -> bool:
        return self.ratio is not None and self.ratio < RULE

    def line(self) -> str:
        """``capacity: 1.2M LoRA params / 34k supervised tokens = 35 per token (≥ 1: fine)``."""
        if self.ratio is None:
            return f"capacity: {short_count(self.params)} trainable params, no supervised tokens counted yet"
        verdict = "below the rule of thumb (≥ 1): may run out of capacity" if self.below_rule else "≥ 1: room left"
        return (f"capacity: {short_count(self.params)} trainable params / {short_count(self.tokens)} supervised "
                f"tokens = {self.ratio:.3g} per token ({verdict})")
