"""``ModelDashboard``: one widget for a model — Status, Adapters, Train, Weights, Spectrum and History tabs.

Someone who never types another magic can attach an adapter (Status tab), switch it on and off
(Adapters: the ``AdapterPanel``), train it and watch the live dashboard with ΔW's ranks over the steps
under its curves, Stop it (Train), and look inside it (Weights, Spectrum: the explorers; History: the
``HistoryView`` of the current or last run, which moves to each new run however it was started; each
built the first time its tab is opened). The training form starts from the model's last training
settings (``session.last_train``, written whenever a run starts). Variables are found through a
``lookup`` function given by the magic layer (the notebook namespace), so nothing here depends on
IPython. The status table follows every change (the dashboard is a session listener and a training
callback); errors a user can cause are shown in one line, and change nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from ..core import registry
from ..core.adapters.attach import attach
from ..core.adapters.status import status
from ..core.training.callbacks import Callback
from ..core.training.reporting import end_line
from ..core.training.settings import TrainSettings
from ..core.training.train import train
from ..errors import DataError, LoraNBError
from ..markup import code_spans, error_html
from .chart import ViewBox
from .compat import set_titles, tooltip
from .ui import close_tree

if TYPE_CHECKING:  # pragma: no cover
    from ..core.training.run import TrainRun

TABS = ("Status", "Adapters", "Train", "Weights", "Spectrum", "History")
LAZY = ("Adapters", "Weights", "Spectrum", "History")  # tabs whose view is built when first opened
_NAMES = (("data", "data"), ("eval_data", "eval data"), ("tokenizer", "tokenizer"), ("loss_fn", "loss"))


def _no_namespace(path: str) -> Any:
    raise LoraNBError(f"no notebook namespace to look up `{path}` in")


def _error(exc: BaseException) -> str:
    return error_html(str(exc))


class ModelDashboard(Callback):
    """Tabs for one model; ``.widget`` is what a notebook shows, ``.views`` the tab views built so far."""

    def __init__(self, model: Any, lookup: Callable[[str], Any] | None = None, name: str = "model") -> None:
        self.model, self.lookup, self.name = registry.as_module(model), lookup or _no_namespace, name
        self.views: dict[str, Any] = {}
        self.live_view = None  # the live training view of the last run started here
        self.live_history = None  # its spectra-history panel
        self.run: TrainRun | None = None
        self.session = None
        self.status_html = W.HTML()
        self._build_attach_form()
        self._build_train_form()
        pages = [W.VBox([self.status_html, self.attach_box]), W.VBox(), self.train_box, W.VBox(), W.VBox(), W.VBox()]
        self.tabs = W.Tab(children=pages)
        set_titles(self.tabs, TABS)
        self.tabs.observe(self._on_tab, names="selected_index")
        self.widget = ViewBox([W.HTML(f"<b>LoRA dashboard: <code>{html.escape(name)}</code></b>"), self.tabs],
                              fallback=lambda: self.status_html.value)
        self.widget._lora_dashboard = self  # the shown widget keeps the dashboard (a weak listener) alive
        self.refresh()

    # -- status ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the model's current state; listen to its session (a new one after detach + attach)."""
        session = registry.find(self.model)
        if session is not None and session is not self.session:
            session.listeners.add(self)
        if session is None and self.session is not None:
            self._forget_views()
        self.session = session
        self._running(session is not None and session.training)
        self.status_html.value = (status(self.model)._repr_html_() if session is not None else
                                  f"<i><code>{html.escape(self.name)}</code> has no LoRA adapter yet: attach one "
                                  "below</i>")

    def on_model_change(self, session: Any, what: str) -> None:
        """Session listener: an adapter changed (here or anywhere)."""
        if what == "detach":
            self._forget_views()
        self.refresh()
        if what == "train":
            self._follow_run()

    def _follow_run(self) -> None:
        """The History tab moves to the run that just started (built now if it showed "no run yet" or is open)."""
        run = self.session.run if self.session is not None else None
        view = self.views.get("History")
        if run is None:
            return
        if view is not None:
            view.follow(run)
        elif self.tabs.children[TABS.index("History")].children or TABS[self.tabs.selected_index or 0] == "History":
            self.open("History")

    def _forget_views(self) -> None:
        for i, title in enumerate(TABS):
            if title in self.views:
                view = self.views.pop(title)
                self.tabs.children[i].children = ()
                view.close()

    # -- attach form ----------------------------------------------------------------------------
    def _build_attach_form(self) -> None:
        self.attach_r = W.BoundedIntText(value=8, min=1, max=4096, description="r", layout=W.Layout(width="140px"))
        self.attach_alpha = W.FloatText(value=16, description="alpha", layout=W.Layout(width="160px"))
        self.attach_targets = W.Text(value="auto", description="targets")
        self.attach_name = W.Text(value="default", description="name")
        self.attach_button = W.Button(description="Attach", icon="plus", tooltip="add a LoRA adapter to the model")
        self.attach_message = W.HTML()
        self.attach_button.on_click(self._on_attach)
        self.attach_box = W.VBox([W.HTML("<b>add an adapter</b>"), W.HBox([self.attach_r, self.attach_alpha]),
                                  W.HBox([self.attach_targets, self.attach_name, self.attach_button]),
                                  self.attach_message])

    def _on_attach(self, _button: Any = None) -> None:
        try:
            attach(self.model, r=self.attach_r.value, alpha=self.attach_alpha.value,
                   targets=self.attach_targets.value.strip() or "auto", name=self.attach_name.value.strip())
        except LoraNBError as exc:
            self.attach_message.value = _error(exc)
            return
        self.attach_message.value = code_spans(f"adapter `{self.attach_name.value.strip()}` attached and active")
        self.refresh()

    # -- train form -----------------------------------------------------------------------------
    def _build_train_form(self) -> None:
        recipe = self._last_train()
        names, last = (recipe.names, recipe.settings) if recipe is not None else ({}, {})
        self.names = {key: W.Text(value=str(names.get(key) or ""), description=label, placeholder="variable name")
                      for key, label in _NAMES}
        self.steps = W.BoundedIntText(value=last.get("steps") or 0, min=0, max=10**9, description="steps",
                                      **tooltip(W.BoundedIntText, "optimizer steps (0: one epoch)"))
        self.lr = W.FloatText(value=last.get("lr", TrainSettings.lr), description="lr")
        self.batch_size = W.BoundedIntText(value=last.get("batch_size", TrainSettings.batch_size), min=1,
                                           max=10**6, description="batch size")
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.train_message = W.HTML()
        self.live = W.Box()
        self.start_button.on_click(self.start)
        self.stop_button.on_click(self.stop)
        fields = list(self.names.values())
        self.train_box = W.VBox([W.HBox(fields[:2]), W.HBox(fields[2:]), W.HBox([self.steps, self.lr]),
                                 W.HBox([self.batch_size, self.start_button, self.stop_button]),
                                 self.train_message, self.live])

    def _last_train(self):
        session = registry.find(self.model)
        return session.last_train if session is not None else None

    def _settings(self) -> dict:
        """The last run's settings, with the form's steps, lr and batch size."""
        last = self._last_train()
        keep = dict(last.settings) if last is not None else {}
        steps = self.steps.value or None
        return {**keep, "steps": steps, "epochs": keep.get("epochs") if steps is None else None,
                "lr": self.lr.value, "batch_size": self.batch_size.value}

    def start(self, _button: Any = None) -> None:
        """Start a background run with the form's settings and show its live dashboard here."""
        from .history import HistoryView
        from .live import LiveDashboard

        try:
            objects = {key: (self.lookup(box.value.strip()) if box.value.strip() else None)
                       for key, box in self.names.items()}
            if objects["data"] is None:
                raise DataError("name the variable that holds the training data")
            live = LiveDashboard()
            settings = self._settings()
            names = {key: box.value.strip() for key, box in self.names.items() if box.value.strip()}
            run = train(self.model, background=True, callbacks=[live, self], names=names, **objects, **settings)
        except LoraNBError as exc:
            self.train_message.value = _error(exc)
            return
        self.run = run
        history = HistoryView(run)  # ranks over steps, live under the curves
        live.add_panel(history.widget)
        self.live.children = (live.widget,)
        self._close_live()  # the view of the previous run (ended: Start is disabled while one runs)
        self.live_view, self.live_history = live, history
        self.refresh()
        if not run.done:
            self.train_message.value = code_spans(f"training adapter `{run.adapter}` on {run.where}…")

    def stop(self, _button: Any = None) -> None:
        """Stop the model's run (started here or by ``%lora train``) at the next step boundary; wait for it."""
        session = registry.find(self.model)
        run = session.run if session is not None else None
        if run is None or run.done:
            return
        run.stop()
        run.wait(timeout=60)
        self.train_message.value = code_spans(run.message)
        self.refresh()

    def _running(self, running: bool) -> None:
        self.start_button.disabled, self.stop_button.disabled = running, not running

    # -- training callback ----------------------------------------------------------------------
    def on_train_begin(self, run: TrainRun) -> None:
        self.refresh()

    def on_train_end(self, run: TrainRun) -> None:
        self.train_message.value = code_spans(end_line(run))
        self.refresh()

    # -- lazy tabs ------------------------------------------------------------------------------
    def _on_tab(self, change: dict) -> None:
        self.refresh()
        index = change["new"]
        title = TABS[index] if index is not None else None
        if title in LAZY and title not in self.views:
            self.open(title)

    def open(self, title: str) -> Any:
        """Build the view of tab ``title`` (a one-line message in the tab if the model cannot show it yet)."""
        from .explorers import SpectrumExplorer, WeightsExplorer
        from .history import HistoryView
        from .toggle import AdapterPanel

        page = self.tabs.children[TABS.index(title)]
        try:
            view = {"Adapters": lambda: AdapterPanel(self.model), "Weights": lambda: WeightsExplorer(self.model),
                    "Spectrum": lambda: SpectrumExplorer(self.model), "History": lambda: HistoryView.of(self.model),
                    }[title]()
        except LoraNBError as exc:
            page.children = (W.HTML(_error(exc)),)
            return None
        self.views[title] = view
        page.children = (getattr(view, "widget", view),)
        return view

    def close(self) -> None:
        """Close every tab's view and the dashboard's widgets; stop following the model."""
        if self.session is not None:
            self.session.listeners.discard(self)
        for view in self.views.values():
            view.close()
        self._close_live()
        self.views = {}
        close_tree(self.widget)

    def _close_live(self) -> None:
        for view in (self.live_history, self.live_view):
            if view is not None:
                view.close()
        self.live_view = self.live_history = None

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
