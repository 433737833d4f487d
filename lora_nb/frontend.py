"""Which front end this process serves, decided here only; every layer asks this module.

- Jupyter kernel or not: an IPython shell with a ``kernel`` (read from ``sys.modules``; nothing is imported).
- Google Colab: ``google.colab`` is imported (Colab imports it when its kernel starts). Colab does not render
  display updates sent from a background thread (googlecolab/colabtools#3373), so ``ui=auto`` is ``static``
  (pictures updated in place) and ``%lora train`` runs in the cell's own thread; its interrupt button stops a
  run at a step boundary.
- VS Code: its Jupyter extension starts kernels from the editor's environment, which carries ``VSCODE_PID``
  (``VSCODE_CWD`` where ``VSCODE_PID`` is not passed on, e.g. WSL and remote hosts: holoviz/panel#5200).
  VS Code renders no widgets with ipywidgets 8.1.9 (microsoft/vscode-jupyter#17504), so there ``ui=auto``
  falls back to ``static`` and says how to get widgets back.
- Anything else with a kernel (JupyterLab, Notebook 7, Kaggle, ...) gets widgets; no kernel (terminal IPython,
  scripts) gets text.

``ui`` is one of ``auto | widget | static | text`` (``UI_MODES``). Every view family (the live training view, the
vs-full and short-run views, reports, explorers, panels) maps the modes it has to its views, and :func:`pick`
chooses among them: no other module compares a mode itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import OptionError

UI_MODES = ("auto", "widget", "static", "text")
# a mode a view family lacks is served by the next simpler one it has: widgets show static pictures, pictures text
SIMPLER = {"widget": ("widget", "static", "text"), "static": ("static", "text"), "text": ("text",)}
View = TypeVar("View")
VSCODE_VARIABLES = ("VSCODE_PID", "VSCODE_CWD")
VSCODE_BROKEN_WIDGETS = ("8.1.9",)  # ipywidgets versions VS Code shows no widgets with (vscode-jupyter#17504)
_said: set[str] = set()  # notes already said in this process


def in_kernel(shell: Any = None) -> bool:
    """True inside a Jupyter kernel (``shell``: an IPython shell, default the running one)."""
    if shell is None:
        ipython = sys.modules.get("IPython")
        get = getattr(ipython, "get_ipython", None)
        shell = get() if get is not None else None
    return getattr(shell, "kernel", None) is not None


def in_colab() -> bool:
    return "google.colab" in sys.modules


def in_vscode(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in VSCODE_VARIABLES)


def ipywidgets_version() -> str | None:
    """The ipywidgets this kernel imports (the one first on the path), None when absent."""
    module = sys.modules.get("ipywidgets")
    if getattr(module, "__version__", None):
        return module.__version__
    from importlib import metadata

    try:
        return metadata.version("ipywidgets")
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class FrontEnd:
    """What a front end gets: ``auto_ui`` (what ``ui=auto`` shows), whether training defaults to a background
    thread, and the lines a user is told once: ``view_note`` when ``auto`` picks a view, ``train_note`` at the
    first train."""

    name: str  # "colab" | "vscode" | "jupyter" | "terminal"
    kernel: bool
    auto_ui: str
    background: bool
    view_note: str = ""
    train_note: str = ""


COLAB_NOTE = ("Colab shows no updates sent from a background thread (googlecolab/colabtools#3373), so training runs "
              "in this cell with pictures updated in place; the interrupt button (■) stops it at a step boundary "
              "and keeps the weights")
COLAB_BACKGROUND_NOTE = ("training in a background thread as asked: Colab may not show its updates "
                         "(googlecolab/colabtools#3373); `%lora stop MODEL` stops it")


def vscode_note(version: str) -> str:
    return (f"VS Code shows no widgets with ipywidgets {version} (microsoft/vscode-jupyter#17504): showing static "
            "pictures instead; `pip install ipywidgets==8.1.8` and a kernel restart bring the widgets back "
            "(not in VS Code? `%config LoraMagics.ui = 'widget'`)")


def detect(kernel: bool | None = None, environ: Mapping[str, str] | None = None) -> FrontEnd:
    """The front end of this process (``kernel``/``environ`` override what is read, for tests and callers)."""
    kernel = in_kernel() if kernel is None else kernel
    if not kernel:
        return FrontEnd("terminal", False, "text", False)
    if in_colab():
        return FrontEnd("colab", True, "static", False, train_note=COLAB_NOTE)
    if in_vscode(environ):
        version = ipywidgets_version()
        if version in VSCODE_BROKEN_WIDGETS:
            return FrontEnd("vscode", True, "static", True, view_note=vscode_note(version))
        return FrontEnd("vscode", True, "widget", True)
    return FrontEnd("jupyter", True, "widget", True)


def resolve_ui(ui: str | None = "auto", kernel: bool | None = None) -> str:
    """``widget``, ``static`` or ``text`` for the requested mode (``auto`` decides from the front end)."""
    mode = (ui or "auto").strip().lower()
    if mode not in UI_MODES:
        raise OptionError(f"ui must be one of {', '.join(UI_MODES)}, not `{ui}`")
    return detect(kernel).auto_ui if mode == "auto" else mode


def resolve_and_note(ui: str | None, kernel: bool | None = None) -> str:
    """:func:`resolve_ui`, saying the front end's view note once (e.g. VS Code's widget bug) when ``auto`` decides."""
    mode = resolve_ui(ui, kernel)
    if (ui or "auto").strip().lower() == "auto":
        say_once(detect(kernel).view_note)
    return mode


def pick(views: Mapping[str, View], ui: str | None = "auto", kernel: bool | None = None, needs: str = "") -> View:
    """A view family's picker: its entry in ``views`` (keyed ``widget`` / ``static`` / ``text``) for ``ui``, ``auto``
    resolved for this front end; a mode the family lacks takes the next simpler one it has (``SIMPLER``). ``needs``:
    the one-line refusal when it has none (e.g. a slider needs a widget front end)."""
    mode = resolve_ui(ui, kernel)
    for simpler in SIMPLER[mode]:
        if simpler in views:
            return views[simpler]
    raise OptionError(needs or f"this view has no {mode} form; it needs ui={' or '.join(views)}")


def background_default() -> bool:
    """Whether a run started without saying trains in a background thread: in a kernel, except in Colab."""
    return detect().background


def say_once(note: str) -> bool:
    """Print ``note: ...`` to stderr the first time this process is told ``note``; True when it was printed."""
    if not note or note in _said:
        return False
    _said.add(note)
    print(f"note: {note}", file=sys.stderr)
    return True
