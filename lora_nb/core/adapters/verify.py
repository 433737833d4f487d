"""What an adapter file must contain for a model: keys and shapes computed by peft itself.

peft injects the adapter's config into a *meta-device skeleton* of the model (a deep copy whose
parameters and buffers are meta tensors: no memory, no change to the user's model), and
the probe adapter's parameters, keyed as in an adapter file, name the keys and shapes a file must hold.
"""

from __future__ import annotations

import copy
import re
import warnings

import torch
from torch import nn

from ...errors import AdapterFileError, preview
from .keys import adapter_parameters_by_key

_PROBE = "lora_nb_probe"


def target_names(config) -> list[str]:
    """The module names an adapter config targets: a list, or lora_nb's exact-name regex ``^(a|b\\.c)$`` read back."""
    targets = config.target_modules
    if isinstance(targets, str):
        body = targets.removeprefix("^(").removesuffix(")$")
        return [re.sub(r"\\(.)", r"\1", name) for name in body.split("|")]
    return sorted(targets or [])


def _meta_skeleton(model: nn.Module) -> nn.Module:
    memo: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=False)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def expected_shapes(model: nn.Module, config) -> dict[str, tuple[int, ...]] | None:
    """Adapter keys (without peft's ``base_model.model.`` prefix) and shapes; ``None`` if no skeleton."""
    from peft import inject_adapter_in_model

    probe = copy.deepcopy(config)
    probe.init_lora_weights, probe.inference_mode = False, True
    try:
        skeleton = _meta_skeleton(model)
    except Exception:
        return None
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            inject_adapter_in_model(probe, skeleton, adapter_name=_PROBE)
    except ValueError:  # peft's message repeats the whole target regex: name a few targets instead
        raise AdapterFileError(f"its target modules {preview(target_names(config), 2)} are not in it") from None
    return {k: tuple(p.shape) for k, p in adapter_parameters_by_key(skeleton, _PROBE).items()}
