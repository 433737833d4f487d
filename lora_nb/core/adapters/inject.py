"""Put an adapter's LoRA layers into a model through peft, all or nothing.

peft replaces target modules one by one; an exception half-way (a layer it cannot build, a rank it
refuses) would leave some layers wrapped and a traceback from deep inside peft. Here such a failure is
rolled back — every new wrapper replaced by its original module, the partial adapter removed from
wrappers that already existed, ``requires_grad`` flags restored, no session — and reported as one
:class:`InjectionError` naming the module, its class and peft's reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ...errors import InjectionError, first_line
from .. import registry


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence peft's notes that do not apply to lora_nb's use of it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*already.*modified.*")
        # transformers deprecates the attribute peft reads while wrapping; nothing the user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # peft selects state-dict keys by substring; lora_nb selects them by exact name segments (adapters.keys)
        warnings.filterwarnings("ignore", message=".*should not be contained in the prefix.*")
        # deleting the active adapter: peft makes another one active, as `status` shows
        warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
        yield


def strip_lora(model: nn.Module) -> None:
    """Put back the original module of every peft wrapper in ``model`` (LoRA layers, modules_to_save)."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    for name, module in reversed(list(model.named_modules())):  # inner wrappers first (MHA's out_proj)
        if isinstance(module, (LoraLayer, ModulesToSaveWrapper)) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            if isinstance(getattr(parent, child, None), (LoraLayer, ModulesToSaveWrapper)):
                original = module.original_module if isinstance(module, ModulesToSaveWrapper) else module
                setattr(parent, child, original.get_base_layer() if isinstance(original, LoraLayer) else original)
    if hasattr(model, "peft_config"):
        del model.peft_config


def restore_flags(model: nn.Module, flags: dict[str, bool]) -> None:
    """Set ``requires_grad`` of every parameter named in ``flags`` back to its recorded value."""
    for n, p in model.named_parameters():
        if n in flags:
            p.requires_grad_(flags[n])


def peft_wrappers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    return {n: m for n, m in model.named_modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))}


def has_adapter(module: nn.Module, name: str) -> bool:
    """True when the peft layer ``module`` holds weights of adapter ``name``."""
    return any(name in getattr(module, attr, {}) for attr in getattr(module, "adapter_layer_names", ()))


def undo_add(model: nn.Module, before: dict[str, nn.Module], name: str) -> None:
    """Remove what a failed ``add_adapter(name)`` left: new wrappers and ``name`` in the old ones."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for qualified, module in reversed(peft_wrappers(model).items()):  # inner wrappers first (MHA's out_proj)
        if before.get(qualified) is module:
            if isinstance(module, BaseTunerLayer) and has_adapter(module, name):
                module.delete_adapter(name)
            continue
        parent_name, _, child = qualified.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, child, None) is module:
            original = getattr(module, "original_module", module)
            setattr(parent, child, original.get_base_layer() if hasattr(original, "get_base_layer") else original)


def _failed_module(model: nn.Module, config, name: str) -> tuple[str, str]:
    """The first module (in model order) that ``config`` targets and that did not get adapter ``name``."""
    from peft.tuners.tuners_utils import check_target_module_exists

    from .targets import named_modules

    for qualified, module in named_modules(model):
        if qualified and check_target_module_exists(config, qualified):
            wrapper = model.get_submodule(qualified) if qualified else model
            if not has_adapter(wrapper, name):
                return qualified, type(module).__name__
    return "?", "?"


def _reason(exc: BaseException) -> str:
    return first_line(exc).rstrip(".")


def inject(model: nn.Module, session, config, name: str) -> "registry.Session":
    """Add adapter ``name`` (peft ``config``) to ``model`` — a new session when ``session`` is None.

    On any exception inside peft the model is left as it was and :class:`InjectionError` is raised.
    """
    from peft import get_peft_model

    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    before = peft_wrappers(model)
    try:
        with quiet_peft():
            if session is None:
                wrapper = get_peft_model(model, config, adapter_name=name)
            else:
                session.peft.add_adapter(name, config)
    except Exception as exc:
        where, kind = _failed_module(model, config, name)
        _roll_back(model, session, before, name, flags)
        raise InjectionError(f"peft cannot adapt `{where}` ({kind}): {_reason(exc)}; the model is unchanged "
                             "(leave it out of `targets=…`)") from None
    except BaseException:  # Ctrl-C: undo, then let it through
        _roll_back(model, session, before, name, flags)
        raise
    if session is None:
        session = registry.Session(model, wrapper, flags)
        registry.register(session)
    return session


def _roll_back(model: nn.Module, session, before: dict[str, nn.Module], name: str, flags: dict[str, bool]) -> None:
    if session is None:
        strip_lora(model)
    else:
        undo_add(model, before, name)
        session.peft.peft_config.pop(name, None)
    restore_flags(model, flags)
