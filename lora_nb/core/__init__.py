"""lora_nb's engine: torch, peft and numpy only (no IPython, ipywidgets or plotly)."""

from .attach import attach, delete_adapter, detach, disable, enable
from .options import AttachOptions
from .registry import Session, find
from .status import AdapterInfo, ModelStatus, status

__all__ = [
    "AdapterInfo", "AttachOptions", "ModelStatus", "Session", "attach", "delete_adapter", "detach", "disable",
    "enable", "find", "status",
]
