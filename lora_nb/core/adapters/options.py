"""``AttachOptions``: the settings of one adapter, validated once for API and magics alike.

The magic ``%lora attach`` builds its parser from these fields (their ``help`` is the
option's help), so a default or a rule lives in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...errors import OptionError

INIT_CHOICES = ("true", "false", "gaussian", "pissa", "olora", "eva", "corda", "loftq", "orthogonal")


def _parse_init(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    if text in INIT_CHOICES or text.startswith("pissa_niter_"):
        return text
    raise OptionError(f"init must be one of {', '.join(INIT_CHOICES)}; got `{value}`")


def _parse_rank_pattern(value: Any) -> dict[str, int] | str | None:
    """``None``, ``"advised"`` (resolved by ``attach``), or ``{module: rank}`` from a dict or ``a:4,b:2``."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "advised"):
        return value if value is None else "advised"
    if isinstance(value, str):
        pairs = [item.rpartition(":") for item in value.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise OptionError(f"rank_pattern must be `advised` or module:rank,module:rank; got `{value}`")
        value = {name.strip(): rank for name, _, rank in pairs}
    if not isinstance(value, dict):
        raise OptionError(f"rank_pattern must be `advised`, a dict or module:rank,…; got {type(value).__name__}")
    ranks = {str(k): as_number(f"rank of {k}", v, int) for k, v in value.items()}
    bad = [k for k, v in ranks.items() if v < 1]
    if bad:
        raise OptionError(f"ranks in rank_pattern must be ≥ 1 (`{bad[0]}`: {ranks[bad[0]]})")
    return ranks


@dataclass
class AttachOptions:
    """How to build one LoRA adapter (mirrors peft's ``LoraConfig`` with friendlier names)."""

    r: int = field(default=8, metadata={"help": "rank of the update ΔW = B·A"})
    alpha: float = field(default=16, metadata={"help": "scaling numerator: ΔW is scaled by alpha/r"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input, in [0, 1)"})
    targets: str | list[str] = field(
        default="auto",
        metadata={"help": "auto | comma-separated module names (q_proj,v_proj) | regex searched in names"},
    )
    name: str = field(default="default", metadata={"help": "adapter name"})
    dora: bool = field(default=False, metadata={"help": "weight-decomposed LoRA (DoRA)"})
    rslora: bool = field(default=False, metadata={"help": "rank-stabilized scaling alpha/sqrt(r)"})
    init: bool | str = field(
        default=True, metadata={"help": "peft init_lora_weights: true|false|gaussian|pissa|olora|…"}
    )
    replace: bool = field(default=False, metadata={"help": "replace an adapter of the same name"})
    modules_to_save: str | list[str] | None = field(
        default=None,
        metadata={"help": "modules trained in full beside LoRA, e.g. a new task head: classifier,score"},
    )
    rank_pattern: str | dict[str, int] | None = field(
        default=None,
        metadata={"help": "per-module ranks: `advised` (from %lora advise) or module:rank,module:rank"},
    )

    def __post_init__(self) -> None:
        self.r = as_number("r", self.r, int)
        if self.r < 1:
            raise OptionError(f"r must be a positive integer; got {self.r}")
        self.alpha = as_number("alpha", self.alpha, float)
        if self.alpha <= 0:
            raise OptionError(f"alpha must be positive; got {self.alpha:g}")
        self.dropout = as_number("dropout", self.dropout, float)
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"dropout must be in [0, 1); got {self.dropout:g}")
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise OptionError(f"adapter name must be an identifier (letters, digits, _); got `{self.name}`")
        self.init = _parse_init(self.init)
        self.rank_pattern = _parse_rank_pattern(self.rank_pattern)
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [m.strip() for m in self.modules_to_save.split(",") if m.strip()] or None

    def lora_config(self, target_modules: str, fan_in_fan_out: bool = False):
        """peft's ``LoraConfig`` for these options and an exact target regex."""
        from peft import LoraConfig

        alpha = int(self.alpha) if float(self.alpha).is_integer() else self.alpha
        return LoraConfig(
            r=self.r,
            lora_alpha=alpha,
            lora_dropout=self.dropout,
            target_modules=target_modules,
            use_dora=self.dora,
            use_rslora=self.rslora,
            init_lora_weights=self.init,
            fan_in_fan_out=fan_in_fan_out,
            modules_to_save=self.modules_to_save,
            rank_pattern=dict(self.rank_pattern or {}),
        )


def as_number(name: str, value: Any, kind: type) -> Any:
    """``value`` as an ``int`` or ``float`` (``kind``), or a one-line error naming the option ``name``."""
    if isinstance(value, bool):
        raise OptionError(f"{name} must be a number; got {value}")
    try:
        number = kind(value)
        float(number)
    except (TypeError, ValueError, OverflowError):
        raise OptionError(f"{name} must be {'an integer' if kind is int else 'a number'}; got `{value}`") from None
    if kind is int and float(value) != number:
        raise OptionError(f"{name} must be an integer; got `{value}`")
    if not math.isfinite(number):
        raise OptionError(f"{name} must be a finite number; got `{value}`")
    return number

