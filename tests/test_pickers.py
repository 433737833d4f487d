"""Each view family is picked from a table by ``frontend.pick``: every mode works for the live training view
(``auto`` included), a family without a mode serves the next simpler one, and one without any says what it needs."""

from __future__ import annotations

import pytest
from helpers import classification_pairs, mlp_with_lora

import lora_nb
from lora_nb.errors import OptionError
from lora_nb.frontend import pick
from lora_nb.widgets.live import LiveDashboard, StaticLiveDashboard, TextLiveDashboard, WidgetLiveDashboard
from lora_nb.widgets.short_runs import ShortRunsLive, TextShortRunsLive


def test_the_live_dashboard_takes_every_mode():
    kinds = {ui: type(LiveDashboard(ui=ui)) for ui in ("widget", "static", "text")}
    assert kinds == {"widget": WidgetLiveDashboard, "static": StaticLiveDashboard, "text": TextLiveDashboard}
    assert isinstance(LiveDashboard(ui="auto"), TextLiveDashboard)  # no kernel here: a terminal's view
    assert type(ShortRunsLive("lr", ui="auto")) is TextShortRunsLive


def test_the_text_dashboard_prints_the_run_and_keeps_its_curves(capsys):
    view = LiveDashboard(ui="text")
    run = lora_nb.train(mlp_with_lora(), classification_pairs(16), steps=3, batch_size=4, callbacks=[view])
    out = capsys.readouterr().out
    assert out.startswith("training adapter `default`") and f"{run.state}: 3/3 steps" in out
    assert "step 3/3" in out and len(view.figure.data) > 0 and view.prints


def test_a_family_without_a_mode_serves_the_next_simpler_one_or_says_what_it_needs():
    assert pick({"static": "picture", "text": "table"}, "widget") == "picture"
    assert pick({"widget": "panel", "text": "table"}, "static") == "table"
    with pytest.raises(OptionError, match="a slider needs widgets"):
        pick({"widget": "slider"}, "text", needs="a slider needs widgets")
    with pytest.raises(OptionError, match="ui must be one of"):
        pick({"text": "table"}, "fancy")
