"""Every view and every dashboard tab, opened in a real browser and read as a learner would: no dropdown without a
chosen item, no chart label cut off by its picture's edge or printed over another label.

A 6-layer BERT classifier built from a config (37 adapted modules named like all-MiniLM-L6-v2's) is trained for 60
steps with eval data; then the dashboard's tabs and the spectrum, weights, history and advise views are opened.
Screenshots of each go to ``tests/e2e/screenshots/test_every_view_<app>/``.
"""

from __future__ import annotations

import pytest

from .lab import LabPage, WidgetFailure
from .test_lab import CHART, make_notebook, notebook_page  # noqa: F401  (notebook_page is a context manager)

pytestmark = pytest.mark.e2e

MODEL = """\
%load_ext lora_nb
import torch
from transformers import BertConfig, BertForSequenceClassification
torch.manual_seed(0)
cfg = BertConfig(num_hidden_layers=6, hidden_size=48, intermediate_size=96, num_attention_heads=2, vocab_size=101,
                 max_position_embeddings=64, num_labels=3)
model = BertForSequenceClassification(cfg).eval()
ids = torch.randint(1, 100, (320, 12), generator=torch.Generator().manual_seed(0))
items = [{"input_ids": i, "labels": int(i[0] % 3)} for i in ids]
data, evals = items[:256], items[256:]"""
CELLS = [MODEL, "%lora attach model --r 8",
         "run = %lora train model --data data --eval evals --steps 60 --lr 3e-3 --wait",
         "%lora dashboard model", "%lora spectrum model", "%lora weights model", "%lora history model",
         "%lora advise model"]
TRAIN, DASHBOARD, VIEWS = 2, 3, {"spectrum": 4, "weights": 5, "history": 6, "advise": 7}
TABS = ("Status", "Adapters", "Train", "Weights", "Spectrum", "History")

# For each visible lora_nb chart (an <svg> carrying its font) in the area: text boxes (client pixels) outside the svg's box, and pairs of text boxes that
# overlap by more than 2 px both ways. Hidden charts (tabs not shown) have an empty box and are skipped.
LABELS = r"""(sel) => { const out = {clipped: [], overlaps: [], charts: 0, untitled: 0};
  for (const svg of document.querySelectorAll(sel)) {
    const s = svg.getBoundingClientRect(); if (s.width < 2) continue; out.charts += 1;
    if (!svg.getAttribute('aria-label') && !svg.querySelector(':scope > title')) out.untitled += 1;
    const boxes = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim())
        .map(t => [t.textContent, t.getBoundingClientRect(), /rotate\(-35/.test(t.getAttribute('transform') || '')]);
    for (const [text, b] of boxes) if (b.left < s.left - 1 || b.right > s.right + 1 || b.top < s.top - 1
        || b.bottom > s.bottom + 1) out.clipped.push(text);
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      if (boxes[i][2] && boxes[j][2]) continue;  // parallel slanted labels: their boxes are checked in the kernel
      const a = boxes[i][1], b = boxes[j][1];
      if (Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2
          && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2) out.overlaps.push([boxes[i][0], boxes[j][0]]);
    } }
  return out; }"""
DROPDOWNS = """(sel) => Array.from(document.querySelectorAll(sel)).filter(s => s.getBoundingClientRect().width > 0)
  .map(s => ({label: (s.closest('.widget-dropdown') || s).innerText.split('\\n')[0], options: s.options.length,
              index: s.selectedIndex, fits: s.scrollWidth <= s.clientWidth + 1}))"""


def check_readable(lab: LabPage, cell: int, what: str) -> dict:
    """The charts of ``cell`` that are on screen: every label inside its picture, none over another; every visible
    dropdown shows a chosen item."""
    area = lab.cell_node(cell)
    labels = lab.page.evaluate(LABELS, f"{area} svg[font-family]")
    dropdowns = lab.page.evaluate(DROPDOWNS, f"{area} .widget-dropdown select")
    problems = []
    if labels["clipped"]:
        problems.append(f"labels cut off: {labels['clipped'][:6]}")
    if labels["overlaps"]:
        problems.append(f"labels over each other: {labels['overlaps'][:6]}")
    if labels["untitled"]:
        problems.append(f"{labels['untitled']} chart(s) without alternative text")
    for d in dropdowns:
        if d["options"] and d["index"] < 0:
            problems.append(f"dropdown {d['label']!r} shows nothing chosen (selectedIndex {d['index']} of "
                            f"{d['options']})")
    if problems:
        raise WidgetFailure(f"{what}: " + "; ".join(problems))
    return {"charts": labels["charts"], "dropdowns": len(dropdowns)}


def shoot_output(lab: LabPage, cell: int, label: str) -> None:
    """A screenshot of the whole output of ``cell`` (taller than the window where the view is)."""
    lab.n_shot += 1
    lab.page.locator(lab.cell_node(cell)).first.screenshot(path=str(lab.shots / f"{lab.n_shot:02d}-{label}-full.png"))


def open_tab(lab: LabPage, cell: int, title: str) -> None:
    lab.page.locator(f"{lab.cell_node(cell)} .lm-TabBar-tab", has_text=title).first.click()
    lab.page.wait_for_timeout(1500)  # the tab's view is built on first opening (a kernel round trip)


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("app", ["lab", "notebook"])
def test_every_view(app, lab_server, browser, screenshots):
    """The dashboard's six tabs and the spectrum, weights, history and advise views: readable, nothing empty."""
    server = lab_server(app=app)
    seen, failures = {}, []
    with notebook_page(server, browser, screenshots, CELLS) as lab:
        for i in range(TRAIN + 1):
            lab.run_cell(i, timeout=240)
        lab.scroll_to(TRAIN)
        lab.shot("train-final")
        shoot_output(lab, TRAIN, "train-final")
        try:
            seen["train"] = check_readable(lab, TRAIN, "training picture")
        except WidgetFailure as exc:
            failures.append(str(exc))
        lab.run_cell(DASHBOARD)
        lab.wait_rendered(DASHBOARD, ".lm-TabBar-tab")
        for title in TABS:
            open_tab(lab, DASHBOARD, title)
            lab.scroll_to(DASHBOARD)
            lab.shot(f"dashboard-{title}")
            shoot_output(lab, DASHBOARD, f"dashboard-{title}")
            try:
                seen[f"dashboard/{title}"] = check_readable(lab, DASHBOARD, f"dashboard tab {title}")
            except WidgetFailure as exc:
                failures.append(str(exc))
        for name, cell in VIEWS.items():
            lab.run_cell(cell)
            lab.scroll_to(cell)
            try:
                lab.wait_rendered(cell, "svg", timeout=30)
                lab.page.wait_for_timeout(500)
                lab.scroll_to(cell)
                lab.shot(name)
                shoot_output(lab, cell, name)
                seen[name] = check_readable(lab, cell, f"%lora {name}")
            except WidgetFailure as exc:
                failures.append(str(exc))
    print(f"{app}: charts and dropdowns seen per view:", seen)
    assert not failures, "\n".join(failures)
    assert all(seen[v]["charts"] for v in ("train", "spectrum", "weights", "history", "advise",
                                           "dashboard/Weights", "dashboard/Spectrum", "dashboard/History"))
