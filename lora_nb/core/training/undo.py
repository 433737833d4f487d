"""What a run forgets when a failed step makes it undo the update before it (a NaN/inf loss).

A non-finite loss at step k was computed on the weights step k-1 left; the loop puts back the copy it took
before step k-1's update (the weights after step k-2, the last known to give a finite loss). The records of
the steps whose updates are undone then go from ``run.history`` (and their evaluations from ``run.evals``), so
``run.step`` and the history describe the adapter as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .run import TrainRun


def forget_undone(run: TrainRun, kept: int) -> None:
    """Keep the records of the first ``kept`` steps only (the weights now are those after step ``kept``)."""
    del run.history[kept:]
    run.evals[:] = [record for record in run.evals if record.get("step", 0) <= kept]
