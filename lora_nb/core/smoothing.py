"""The smoothing of noisy per-step numbers (loss) that every view of a run shares: console, dashboards, figures."""

from __future__ import annotations

SMOOTHING = 0.9  # β of the loss curves' moving average (TensorBoard's default smoothing)


class Ema:
    """Debiased exponential moving average (TensorBoard-style smoothing); ``add`` returns the new mean."""

    def __init__(self, beta: float = SMOOTHING) -> None:
        self.beta, self._sum, self._weight = beta, 0.0, 0.0

    def add(self, value: float) -> float:
        self._sum = self.beta * self._sum + (1.0 - self.beta) * value
        self._weight = self.beta * self._weight + (1.0 - self.beta)
        return self._sum / self._weight
