"""lora_nb's engine: torch, peft and numpy only (no IPython, ipywidgets or plotly)."""

from .adapters.attach import attach, delete_adapter, detach
from .adapters.options import AttachOptions
from .adapters.status import AdapterInfo, ModelStatus, status
from .adapters.switch import disable, enable
from .registry import Session, find

__all__ = [
    "AdapterInfo", "AttachOptions", "ModelStatus", "Session", "attach", "delete_adapter", "detach", "disable",
    "enable", "find", "status",
]
