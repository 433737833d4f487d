"""Two runs at once in one kernel: allowed when neither draws random numbers, else the second is refused.

Dropout draws its masks from torch's one global random generator (peft's LoRA dropout and a model's own
``nn.Dropout`` take no generator of their own), and starting a seeded run reseeds that generator. Two runs
training at once in one process would interleave their draws, so neither would give what it gives alone. lora_nb
therefore refuses to start a run in this process while another one trains here when either model has a dropout
with p > 0; runs without dropout draw nothing from the global generator (each run's data order comes from a
generator of its own) and train together as they would alone. What it cannot see: a ``loss_fn`` that draws
random numbers itself.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from torch import nn

from ...errors import TrainingActiveError

if TYPE_CHECKING:  # pragma: no cover
    from .run import TrainRun

_lock = threading.Lock()
_runs: "weakref.WeakKeyDictionary[TrainRun, weakref.ref]" = weakref.WeakKeyDictionary()  # run -> its session
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_CONFIG_KEYS = ("dropout", "pdrop")  # parts of a config field that sets a functional dropout's probability


def dropout_in(model: nn.Module) -> str | None:
    """Where ``model`` draws dropout masks in training (a module's name, or a config field), or None."""
    for name, module in model.named_modules():
        if isinstance(module, _DROPOUTS) and module.p > 0:
            return f"`{name}` (p={module.p:g})"
    config = getattr(model, "config", None)
    for key, value in (vars(config).items() if config is not None and hasattr(config, "__dict__") else ()):
        if any(part in key for part in _CONFIG_KEYS) and isinstance(value, float) and value > 0:
            return f"config.{key}={value:g}"
    return None


def _training(run: TrainRun, session: weakref.ref) -> bool:
    """True while ``run`` is its session's run and has not ended (a run refused or never started is not)."""
    return getattr(session(), "run", None) is run and not run.done


def claim(run: TrainRun, session: Any) -> None:
    """Note ``run`` (of ``session``) as training in this process, or refuse it in one line when another run trains
    here and either draws dropout masks from torch's global generator. Call it right before the run starts."""
    session.ensure_idle("start another training run")  # this model's own run: the usual refusal
    with _lock:
        others = [(r, s) for r, s in _runs.items() if r is not run and _training(r, s)]
        mine = dropout_in(run.model)
        for other, _ in others:
            theirs = dropout_in(other.model)
            if mine or theirs:
                which = f"this model has dropout {mine}" if mine else f"that model has dropout {theirs}"
                raise TrainingActiveError(
                    f"another run trains in this kernel (adapter `{other.adapter}` of a {type(other.model).__name__}) "
                    f"and {which}: both would draw from torch's one global random generator, so neither would "
                    "give its seeded result; wait for it (`run.wait()`) or stop it, or train without dropout")
        _runs[run] = weakref.ref(session)
