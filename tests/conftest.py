"""Shared fixtures, and no network: the suite never reaches anything but localhost (builders: helpers.py)."""

from __future__ import annotations

import os
import socket

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch

_LOCAL = ("127.0.0.1", "::1", "localhost")
_real_connect = socket.socket.connect


def _guarded_connect(self, address):  # G24: the suite never reaches the network
    host = address[0] if isinstance(address, tuple) else address
    if self.family == socket.AF_UNIX or host in _LOCAL:
        return _real_connect(self, address)
    raise OSError(f"network access blocked in tests: {address!r}")


socket.socket.connect = _guarded_connect


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _cpu_unless_a_gpu_test(request, monkeypatch):
    """The suite checks the CPU behaviour on any machine: with a GPU present, `device="auto"` still means the CPU
    here, except in tests marked ``gpu`` (tests/test_gpu.py), which check the GPU."""
    if request.node.get_closest_marker("gpu") is None and torch.cuda.is_available():
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def ip():
    """A plain (terminal-like) IPython shell with lora_nb loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lora_nb")
    yield shell
    for key in [k for k in shell.user_ns if not k.startswith("_") and k not in shell.user_ns_hidden]:
        shell.user_ns.pop(key, None)
