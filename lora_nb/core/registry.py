"""Where lora_nb keeps its state: one ``Session`` per adapted model object.

The session holds peft's wrapper (peft owns every per-layer fact: weights,
scaling, active/enabled/merged), the base parameters' original ``requires_grad``
flags (restored on detach), the training run in progress and the history of
finished runs. Nothing here copies peft's per-layer state.
"""

from __future__ import annotations

import threading
import traceback
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import (
    AdapterError,
    LoraNBWarning,
    NotAModelError,
    TrainingActiveError,
    a_kind,
    did_you_mean,
    first_line,
)

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftModel

    from .types import RunHandle


@dataclass
class TrainRecipe:
    """How the model was last trained: the settings, and the notebook names of the data it was given."""

    settings: dict[str, Any]
    names: dict[str, str] = field(default_factory=dict)  # data / eval_data / tokenizer / loss_fn -> variable name


@dataclass(eq=False, repr=False)
class Session:
    """lora_nb's handle on one model that has LoRA adapters (what ``lora_nb.attach`` returns)."""

    model: nn.Module
    peft: "PeftModel"
    requires_grad: dict[str, bool]
    lock: threading.RLock = field(default_factory=threading.RLock)
    run: RunHandle | None = None  # the TrainRun in progress (or the last one), see training.run
    records: dict[str, dict] = field(default_factory=dict)  # per adapter: how it was made
    listeners: "weakref.WeakSet[Any]" = field(default_factory=weakref.WeakSet)  # views to tell of changes
    last_train: TrainRecipe | None = None  # written when a run starts (training.run.start_run)
    merge_backup: Callable[[], None] | None = None  # set by merge: puts the exact pre-merge base weights back
    layer_index: Any = None  # adapters.switch.LayerIndex: the LoRA layers and each adapter's parameters
    base_spectra: dict = field(default_factory=dict)  # (module, "W" | adapter) -> (weights key, singular values)
    base_norms: dict = field(default_factory=dict)  # module -> (weights key, ‖W‖_F)
    advice: Any = None  # analysis.learned.advisor.Advice: the last rank advice (attach's rank_pattern="advised")

    @property
    def lora(self):
        """peft's ``LoraModel`` (the tuner that owns the layers)."""
        return self.peft.base_model

    @property
    def adapters(self) -> list[str]:
        return list(self.peft.peft_config)

    @property
    def active(self) -> str:
        return self.peft.active_adapter

    @property
    def training(self) -> bool:
        return self.run is not None and self.run.state in ("running", "paused")

    def check_adapter(self, name: str) -> str:
        """Return ``name`` if the model has that adapter, else a one-line error."""
        if name not in self.peft.peft_config:
            raise AdapterError(
                f"no adapter `{name}` on this model{did_you_mean(name, self.adapters)} "
                f"(adapters: {', '.join(self.adapters)})"
            )
        return name

    def __repr__(self) -> str:
        """One line (the model and its weights are not repeated here): adapters, the active one, the run."""
        names = ", ".join(f"`{a}`" + (" (active)" if a == self.active else "") for a in self.adapters)
        run = f"; training: {self.run.state}" if self.run is not None and self.training else ""
        return f"<lora_nb session on {type(self.model).__name__}: adapters {names}{run}; lora_nb.status(model) " \
               "shows the table>"

    def __deepcopy__(self, memo: dict) -> None:
        return None  # a copied model is a plain model (its LoRA layers are copied, its lora_nb state is not)

    def __reduce__(self):
        return (_no_session, ())

    def notify(self, what: str) -> None:
        """Tell every listening view (``listener.on_model_change(session, what)``) that peft's state changed.

        The change has happened already: a listener that raises is reported once (a warning with its
        traceback) and detached, and the operation's result stands.
        """
        for listener in list(self.listeners):
            try:
                listener.on_model_change(self, what)
            except Exception as exc:
                self.listeners.discard(listener)
                report_failed_listener(listener, "on_model_change", exc)

    def verify(self) -> None:
        """A one-line error when the model's LoRA layers no longer hold every adapter the session knows (they were
        changed behind lora_nb's back: through a part of the model, or with peft directly)."""
        index = self.layer_index  # adapters.switch.LayerIndex: when its layers are all still in place, nothing moved
        if index is not None and index.intact(self):
            return
        missing = [name for name in self.adapters if name not in adapters_in_layers(self.model)]
        if missing:
            raise AdapterError(
                f"this model's LoRA layers were changed outside lora_nb (through a part of the model, or with peft "
                f"directly): adapter(s) {', '.join(f'`{n}`' for n in missing)} have no layer left; `%lora detach "
                "MODEL` (lora_nb.detach) clears what is left, then attach again")

    def ensure_idle(self, action: str) -> None:
        """Refuse a mutating ``action`` while a training run changes the model."""
        if self.training:
            raise TrainingActiveError(
                f"training is running; stop it first (`run.stop()`) before you {action}"
            )


# A session lives in its model's __dict__ under this key: the model and its peft wrapper reference each
# other, so a registry outside the model would keep every adapted model alive; this way `del model` frees it
# (the cycle is collected). Copies and pickles of the model carry no session (see Session.__deepcopy__).
_KEY = "_lora_nb_session"
_lock = threading.Lock()


def _no_session() -> None:
    return None


def as_module(obj: Any, what: str = "model") -> nn.Module:
    """The user's own module for ``obj`` (a peft wrapper resolves to the model it wraps)."""
    from peft import PeftModel  # peft imports are slow; keep `import lora_nb` light

    if isinstance(obj, PeftModel):
        obj = obj.base_model.model
    if not isinstance(obj, nn.Module):
        raise NotAModelError(f"{what} must be a torch.nn.Module, got {a_kind(obj)}")
    return obj


def find(model: Any) -> Session | None:
    """The session of ``model``, adopting a ``PeftModel`` the user built with peft directly."""
    from peft import PeftModel

    wrapper = model if isinstance(model, PeftModel) else None
    model = as_module(model)
    session = model.__dict__.get(_KEY)  # one dict read: no lock (a Ctrl-C can never leave one held)
    if session is None and wrapper is not None:
        with _lock:
            session = model.__dict__.get(_KEY)
            if session is None:
                session = Session(model, wrapper, {n: p.requires_grad for n, p in model.named_parameters()})
                model.__dict__[_KEY] = session
    return session


def require(model: Any, verify: bool = True) -> Session:
    """The session of ``model`` (checked against the model's layers unless ``verify`` is False), or a one-line
    error saying how to get one."""
    session = find(model)
    if session is None:
        check_unowned(model)
        raise AdapterError("this model has no LoRA adapter; attach one first (`lora_nb.attach(model)`)")
    if verify:
        session.verify()
    return session


def adapters_in_layers(model: nn.Module) -> set[str]:
    """The adapter names that peft's LoRA layers inside ``model`` hold."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {name for m in model.modules() if isinstance(m, BaseTunerLayer)
            for attr in m.adapter_layer_names for name in getattr(m, attr, {})}


def check_unowned(model: Any) -> None:
    """A one-line error when ``model`` has no session but holds LoRA layers: it is part of a model that has
    adapters (its session owns those layers), or peft put them there directly."""
    module = as_module(model)
    if find(module) is None and adapters_in_layers(module):
        raise AdapterError(
            f"this {type(module).__name__} holds LoRA layers that belong to the model it is part of (or that peft "
            "added directly): give that model (or the PeftModel), so its session sees every change")


def register(session: Session) -> None:
    session.model.__dict__[_KEY] = session  # one dict store (atomic): inside a guarded section, no lock to leave held


def forget(model: nn.Module) -> None:
    model.__dict__.pop(_KEY, None)


def report_failed_listener(listener: Any, hook: str, exc: BaseException) -> None:
    """One warning for a view whose ``hook`` raised (it is detached by the caller); the traceback goes with it."""
    detail = "".join(traceback.format_exception(exc)).rstrip()
    warnings.warn(f"{type(listener).__name__}.{hook} raised {type(exc).__name__}: {first_line(exc)}; the view was "
                  f"detached and the operation's result stands\n{detail}", LoraNBWarning, stacklevel=3)
