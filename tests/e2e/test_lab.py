"""lora_nb in a real JupyterLab 4 and Notebook 7 under headless Chromium: a user's notebook, checked in the browser.

Run with ``python -m pytest -m e2e tests/e2e`` (or ``scripts/e2e.sh``). Screenshots of every stage go to
``tests/e2e/screenshots/<test name>/``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import nbformat
import pytest

from .lab import LabPage, WidgetFailure

pytestmark = pytest.mark.e2e

R = 8  # adapter rank; module "2" is Linear(32, 3), so its ΔW has min(8, 3, 32) = 3 singular values
BARS = {"0": min(R, 32, 16), "2": min(R, 3, 32)}

SETUP = "%load_ext lora_nb\nimport json, time\nimport torch\nfrom torch import nn"
MODEL = """\
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3), nn.ReLU(),
                      nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
X = torch.randn(512, 16)
data = torch.utils.data.TensorDataset(X, X[:, :4].argmax(1))
probe = torch.randn(8, 16)
with torch.no_grad():
    base_out = model(probe)

def slow_loss(model, batch):  # a small sleep per step, so the run lasts long enough to watch
    time.sleep(0.05)
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)"""
ATTACH = f"%lora attach model --r {R}"
TRAIN = "run = %lora train model --data data --loss slow_loss --steps 600 --lr 1e-2"
STATE = "print(json.dumps({'state': run.state, 'step': run.step}))"
TOGGLE = "%lora toggle model"
PROBE = "with torch.no_grad():\n    print(json.dumps({'equal_base': bool(torch.equal(model(probe), base_out))}))"
SPECTRUM = "%lora spectrum model"
HISTORY = "%lora history model"
NO_STOP = "run.stop = lambda: None  # sabotage: Stop now does nothing"

STORY = [SETUP, MODEL, ATTACH, TRAIN, STATE, TOGGLE, PROBE, SPECTRUM, HISTORY]
C = {name: i for i, name in enumerate(["setup", "model", "attach", "train", "state", "toggle", "probe", "spectrum",
                                       "history"])}


def make_notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


@contextlib.contextmanager
def notebook_page(server, browser, shots, cells: list[str]) -> Iterator[LabPage]:
    """Open ``cells`` as a fresh notebook; close the page and the kernel afterwards, also on failure."""
    name = server.write_notebook("lora_story.ipynb", make_notebook(cells))
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        lab = LabPage(ctx.new_page(), server, shots)
        lab.open(name)
        yield lab
    finally:
        ctx.close()
        server.delete_sessions()


# -- the checks, each raising WidgetFailure with what it saw ------------------------------------------------


CHART = ".widget-html svg"  # every lora_nb chart: an SVG inside a core ipywidgets HTML widget


def loss_trace(lab: LabPage, cell: int) -> tuple[int, int | None]:
    """(points of the "train loss" curve, step shown in the progress line) of the live dashboard in ``cell``."""
    got = lab.page.evaluate(
        "(sel) => { const area = document.querySelector(sel); if (!area) return null;"
        " for (const p of area.querySelectorAll('svg path')) { const t = p.querySelector('title');"
        " if (t && t.textContent === 'train loss') { const m = area.innerText.match(/step (\\d+)\\//);"
        " return [Number(p.getAttribute('data-points')), m ? Number(m[1]) : null]; } } return null; }",
        lab.cell_node(cell))
    if got is None:
        raise WidgetFailure(f"cell {cell}: no chart with a 'train loss' curve in the training dashboard")
    return got[0], got[1]


def check_live_loss(lab: LabPage, cell: int, samples: int = 5, every: float = 1.0) -> list[tuple[int, int]]:
    """The dashboard renders and its loss curve gains points while the run goes (sampled ``samples`` times)."""
    lab.wait_rendered(cell, CHART)
    lab.scroll_to(cell)
    seen = []
    for _ in range(samples):
        seen.append(loss_trace(lab, cell))
        time.sleep(every)
    points, steps = [p for p, _ in seen], [s for _, s in seen]
    # the dashboard decimates past 1000 points; this run is far below that, so both must grow at every sample
    if any(s is None for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])) \
            or any(b <= a for a, b in zip(points, points[1:])):
        raise WidgetFailure(f"the loss plot did not grow while training: (points, last step) = {seen}")
    return seen


def check_picture_left(lab: LabPage, cell: int, within: float = 10.0) -> None:
    """When the run has ended its live view becomes a static SVG picture (what a saved notebook keeps)."""
    area = lab.cell_node(cell)
    picture = lab.page.locator(f"{area} .jp-RenderedSVG, {area} .jp-RenderedImage, {area} .jp-RenderedHTMLCommon svg")
    try:
        picture.first.wait_for(state="attached", timeout=within * 1000)
    except Exception as exc:
        raise WidgetFailure(f"cell {cell}: no static picture {within:.0f} s after the run ended") from exc
    if lab.chart_count(cell):
        raise WidgetFailure(f"cell {cell}: the live widget is still shown beside the picture")


def click_stop(lab: LabPage, cell: int) -> None:
    lab.page.locator(f"{lab.cell_node(cell)} .widget-button", has_text="Stop").first.click()


def check_stopped(lab: LabPage, state_cell: int, within: float = 5.0) -> dict:
    """After Stop: the kernel reports state "stopped" and the step count no longer grows."""
    deadline = time.monotonic() + within
    first = lab.json_line(state_cell)
    while first["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        first = lab.json_line(state_cell)
    time.sleep(1.5)
    later = lab.json_line(state_cell)
    if first["state"] != "stopped" or later["step"] != first["step"]:
        raise WidgetFailure(f"Stop did not stop the run: {within:.0f} s after the click the kernel says "
                            f"{first}, then {later} 1.5 s later (steps still growing)")
    return later


def check_toggle(lab: LabPage, toggle_cell: int, probe_cell: int, adapter: str = "default") -> None:
    """Clicking the adapter's toggle switches it off in the kernel: outputs equal the base model's, then not."""
    lab.wait_rendered(toggle_cell, ".widget-toggle-button")
    button = lab.page.locator(f"{lab.cell_node(toggle_cell)} .widget-toggle-button", has_text=adapter).first
    before = lab.json_line(probe_cell)["equal_base"]
    if before is not False:
        raise WidgetFailure("the trained adapter already gives the base model's outputs before the toggle")
    for expected in (True, False):  # off, then on again
        button.click()
        deadline = time.monotonic() + 5
        while (got := lab.json_line(probe_cell)["equal_base"]) != expected and time.monotonic() < deadline:
            time.sleep(0.3)
        if got != expected:
            raise WidgetFailure(f"clicking the `{adapter}` toggle did not switch it: outputs equal base = {got}")
        lab.shot(f"toggle-{'off' if expected else 'on'}")


def spectrum_bars(lab: LabPage, cell: int) -> int:
    """Bars in the spectrum view's σᵢ(ΔW) chart (each carries its value as hover text)."""
    return lab.page.evaluate(
        "(sel) => Array.from(document.querySelectorAll(sel)).filter(t => /^σ\\d+ = /.test(t.textContent)).length",
        f"{lab.cell_node(cell)} svg rect title")


def each_module(lab: LabPage, cell: int, expected: dict, read, shown) -> Iterator[tuple]:
    """Pick each module of ``expected`` in the view's dropdown; yield ``(module, wanted, seen)``, ``seen`` being what
    ``read(lab, cell)`` gave once ``shown(seen, wanted)`` held, or after 10 s."""
    lab.wait_rendered(cell, CHART)
    lab.scroll_to(cell)
    select = lab.page.locator(f"{lab.cell_node(cell)} .widget-dropdown select").first
    for module, wanted in expected.items():
        select.select_option(label=module)
        deadline = time.monotonic() + 10
        while not shown(seen := read(lab, cell), wanted) and time.monotonic() < deadline:
            time.sleep(0.3)
        yield module, wanted, seen


def check_spectrum(lab: LabPage, cell: int, expected: dict[str, int]) -> None:
    """For each module chosen in the view's dropdown, the bar count is min(r, out, in)."""
    for module, bars, got in each_module(lab, cell, expected, spectrum_bars, lambda seen, bars: seen == bars):
        lab.shot(f"spectrum-{module}")
        if got != bars:
            raise WidgetFailure(f"spectrum of module `{module}` shows {got} bars, expected {bars}")


def history_picture(lab: LabPage, cell: int) -> dict:
    """The history view's two charts: whether the rank map holds its PNG, and the σ lines drawn for the module."""
    return lab.page.evaluate(
        """(sel) => { const svgs = Array.from(document.querySelectorAll(sel));
                      const png = svgs.length > 0 && Array.from(svgs[0].querySelectorAll('image')).some(
                          i => (i.getAttribute('href') || '').startsWith('data:image/png;base64,'));
                      return {charts: svgs.length, png: png, lines: svgs.length > 1 ?
                              svgs[1].querySelectorAll('path').length : 0}; }""",
        f"{lab.cell_node(cell)} .widget-html svg")


def check_history(lab: LabPage, cell: int, expected: dict[str, int]) -> None:
    """ΔW's ranks over the run: the rank map is one PNG; each module picked shows one σ line per singular value."""
    for module, lines, got in each_module(lab, cell, expected, history_picture,
                                          lambda seen, lines: seen["lines"] == lines):
        lab.shot(f"history-{module}")
        if got != {"charts": 2, "png": True, "lines": lines}:
            raise WidgetFailure(f"history of module `{module}`: saw {got}, expected 2 charts, the rank map's PNG "
                                f"and {lines} σ lines")


def check_console(lab: LabPage) -> None:
    """No widget anywhere shows an error box, and the browser logged no error (network noise aside)."""
    broken = lab.page.locator(".jupyter-widgets-error-widget").count()
    if broken:
        raise WidgetFailure(f"{broken} widget(s) show .jupyter-widgets-error-widget")
    if lab.errors():
        raise WidgetFailure("browser console errors: " + "; ".join(e.splitlines()[0] for e in lab.errors()))


# -- the tests ------------------------------------------------------------------------------------------------


def run_cells(lab: LabPage, cells: list[int]) -> None:
    for i in cells:
        lab.run_cell(i)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_lora_story(app, lab_server, browser, screenshots):
    """attach → train live → Stop → picture → toggle → spectrum → ranks over the run, in JupyterLab 4 and Notebook 7,
    no console errors."""
    server = lab_server(app=app)
    with notebook_page(server, browser, screenshots, STORY) as lab:
        lab.shot("opened")
        run_cells(lab, [C["setup"], C["model"], C["attach"], C["train"]])
        seen = check_live_loss(lab, C["train"])
        print(f"{app}: loss plot (points, last step):", seen)
        lab.shot("training-live")
        click_stop(lab, C["train"])
        final = check_stopped(lab, C["state"])
        print(f"{app}: after Stop:", final)
        lab.scroll_to(C["train"])
        check_picture_left(lab, C["train"])
        lab.shot("stopped")
        lab.run_cell(C["toggle"])
        lab.scroll_to(C["toggle"])
        check_toggle(lab, C["toggle"], C["probe"])
        lab.run_cell(C["spectrum"])
        check_spectrum(lab, C["spectrum"], BARS)
        lab.run_cell(C["history"])
        check_history(lab, C["history"], BARS)
        check_console(lab)
        print(f"{app}: browser console errors (all, before the noise filter):", lab.console)


@pytest.mark.timeout(120)
def test_fails_fast_when_widgets_cannot_render(lab_server, browser, screenshots):
    """With the ipywidgets front-end extension disabled, the dashboard cannot render: the check says so quickly."""
    server = lab_server(disabled_extensions=("@jupyter-widgets/jupyterlab-manager",))
    with notebook_page(server, browser, screenshots, STORY[:C["train"] + 1]) as lab:
        run_cells(lab, [C["setup"], C["model"], C["attach"], C["train"]])
        t0 = time.monotonic()
        with pytest.raises(WidgetFailure) as failure:
            lab.wait_rendered(C["train"], CHART, timeout=8)
        took = time.monotonic() - t0
        print(f"detected in {took:.2f} s: {failure.value}")
    assert took < 15
    assert f"{CHART} did not appear" in str(failure.value)


@pytest.mark.timeout(120)
def test_fails_fast_when_stop_does_nothing(lab_server, browser, screenshots):
    """If Stop does nothing (the run's stop() is sabotaged in the notebook), the Stop check fails quickly."""
    server = lab_server()
    cells = STORY[:C["train"] + 1] + [NO_STOP, STATE]
    with notebook_page(server, browser, screenshots, cells) as lab:
        run_cells(lab, [C["setup"], C["model"], C["attach"], C["train"], C["train"] + 1])
        lab.wait_rendered(C["train"], CHART)
        click_stop(lab, C["train"])
        t0 = time.monotonic()
        with pytest.raises(WidgetFailure) as failure:
            check_stopped(lab, C["train"] + 2)
        took = time.monotonic() - t0
        print(f"detected in {took:.2f} s: {failure.value}")
        lab.shot("stop-ignored")
    assert took < 15
    assert "Stop did not stop the run" in str(failure.value) and "'running'" in str(failure.value)
