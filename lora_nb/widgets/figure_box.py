"""``FigureBox``: an ``ipywidgets.Output`` that shows one static ``go.Figure`` and replaces it on ``draw``."""

from __future__ import annotations

from typing import Any

import ipywidgets as W


class FigureBox(W.Output):
    """Shows the latest figure given to ``draw`` (a plain ``go.Figure``: no FigureWidget, no custom JavaScript)."""

    def __init__(self, figure: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.figure = None
        self.draws = 0
        if figure is not None:
            self.draw(figure)

    def draw(self, figure: Any) -> None:
        """Replace the shown figure with ``figure``."""
        from IPython.display import display

        self.figure = figure
        self.draws += 1
        with self:
            self.clear_output(wait=True)
            display(figure)
