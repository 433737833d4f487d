"""Drive one notebook in JupyterLab or Notebook 7 through Playwright: run cells, read outputs, collect errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# Console messages that are not about the notebook's widgets (network noise of an offline browser).
NOISE = re.compile(r"favicon|Failed to load resource|net::ERR_|ERR_NAME_NOT_RESOLVED|fonts\.googleapis"
                   r"|/api/(nbconvert|lsp|kernelspecs|workspaces|settings|translations|lab/api/news)",
                   re.IGNORECASE)

# Notebook 7's own error, seen with a plain `1+1` notebook too: after a cell runs, the shortcuts settings listener
# reads the schema of a plugin that Notebook 7 does not load (core JupyterLab code, not lora_nb's widgets).
FRONT_END_NOISE = {"notebook": re.compile(r"pageerror: Cannot read properties of undefined \(reading 'schema'\)$")}

_NB = "window.jupyterapp.shell.currentWidget"


class WidgetFailure(AssertionError):
    """A widget did not render, or a view did not behave: the message says which and why."""


class LabPage:
    """A notebook open in JupyterLab or Notebook 7 (both expose ``window.jupyterapp``) in one browser page."""

    def __init__(self, page, server, shots: Path) -> None:
        self.page, self.server, self.shots = page, server, shots
        self.console: list[str] = []
        self.n_shot = 0
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            self.console.append(f"console.error: {msg.text}")

    def errors(self) -> list[str]:
        """Browser console errors and page errors, minus network noise of an offline browser."""
        own = FRONT_END_NOISE.get(self.server.app)
        return [e for e in self.console if not NOISE.search(e) and not (own and own.search(e))]

    def open(self, name: str, timeout: float = 60.0) -> None:
        """Open ``name`` fresh (in Lab: ``?reset``) and wait for its kernel to be idle."""
        reset = "reset&" if self.server.app == "lab" else ""  # Notebook 7 shows one notebook a page; ?reset breaks it
        self.page.goto(f"{self.server.notebook_url(name)}?{reset}token={self.server.token}")
        self.page.wait_for_function(
            f"() => {{ const w = window.jupyterapp && {_NB}; return w && w.content && w.sessionContext && w.sessionContext.session"
            f" && w.sessionContext.session.kernel && w.sessionContext.session.kernel.status === 'idle'"
            f" && w.content.widgets.length > 0; }}", timeout=timeout * 1000)
        self.page.evaluate(f"() => {_NB}.content.widgets.forEach((c, i) => c.node.setAttribute('data-e2e-cell', i))")

    def run_cell(self, index: int, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Execute cell ``index``, wait until it finished, and return its outputs; fail on an error output."""
        self.page.evaluate(
            f"async (i) => {{ const w = {_NB}; w.content.activeCellIndex = i; w.content.deselectAll();"
            f" await window.jupyterapp.commands.execute('notebook:run-cell'); }}", index)
        self.page.wait_for_function(
            f"(i) => {{ const w = {_NB}; const m = w.content.widgets[i].model;"
            f" return m.executionCount !== null && w.sessionContext.session.kernel.status === 'idle'; }}",
            arg=index, timeout=timeout * 1000)
        outs = self.outputs(index)
        for o in outs:
            if o.get("output_type") == "error":
                tb = "\n".join(o.get("traceback", []))
                raise AssertionError(f"cell {index} raised {o['ename']}: {o['evalue']}\n{_strip_ansi(tb)[-2000:]}")
        return outs

    def outputs(self, index: int) -> list[dict[str, Any]]:
        return self.page.evaluate(f"(i) => {_NB}.content.widgets[i].model.outputs.toJSON()", index)

    def text(self, index: int) -> str:
        """All stream and text/plain output of cell ``index``."""
        parts = []
        for o in self.outputs(index):
            if o.get("output_type") == "stream":
                parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
            elif "text/plain" in o.get("data", {}):
                t = o["data"]["text/plain"]
                parts.append("".join(t) if isinstance(t, list) else t)
        return "".join(parts)

    def json_line(self, index: int) -> dict[str, Any]:
        """Run cell ``index`` and parse the last line it printed as JSON."""
        self.run_cell(index)
        lines = [ln for ln in self.text(index).splitlines() if ln.strip()]
        if not lines:
            raise AssertionError(f"cell {index} printed nothing")
        return json.loads(lines[-1])

    def cell_node(self, index: int) -> str:
        """A CSS selector for the output area of cell ``index`` in the open notebook."""
        return f'[data-e2e-cell="{index}"] .jp-OutputArea'

    def wait_rendered(self, index: int, selector: str, timeout: float = 60.0) -> None:
        """Wait for ``selector`` in cell ``index``'s output, or fail fast with a widget error's text."""
        area = self.cell_node(index)
        error = f"{area} .jupyter-widgets-error-widget"
        loc = self.page.locator(f"{area} {selector}, {error}").first
        try:
            loc.wait_for(state="attached", timeout=timeout * 1000)
        except Exception as exc:
            raise WidgetFailure(f"cell {index}: {selector} did not appear within {timeout:.0f} s; "
                                f"cell text: {self.text(index)[:300]!r}") from exc
        if self.page.locator(error).count():
            self.shot(f"cell{index}-widget-error")
            detail = self.page.locator(error).first.inner_text()
            raise WidgetFailure(f"cell {index}: widget failed to render (.jupyter-widgets-error-widget): "
                                f"{detail.strip()[:200]}; browser says: {[e.splitlines()[0] for e in self.errors()[:3]]}")

    def chart_count(self, index: int) -> int:
        """SVG charts (widget HTML holding an ``<svg>``) in cell ``index``'s output."""
        return self.page.locator(f"{self.cell_node(index)} .widget-html svg").count()

    def shot(self, label: str) -> Path:
        self.n_shot += 1
        path = self.shots / f"{self.n_shot:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=False)
        return path

    def scroll_to(self, index: int) -> None:
        self.page.evaluate(f"(i) => {_NB}.content.widgets[i].node.scrollIntoView()", index)


def _strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)
