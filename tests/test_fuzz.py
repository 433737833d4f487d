"""Every line a user types survives: seeded property-based fuzzing of every `%lora` verb and option, `%%lora` cell
bodies and `%config LoraMagics` values, against a shell holding real tiny models.

The lines are generated from the verbs' own argparse parsers (``lora_nb.cmd.VERBS``) and the magics' traits, so a
new verb, option or setting is fuzzed without editing this file. Values are careful (what the help suggests) and
hostile (wrong kinds of variables, impossible paths, non-numbers, NaN, the working folder). After every line:
  - it worked, or raised exactly one IPython ``UsageError`` whose message is one line (no traceback);
  - a refused line changed no model (parameters, ``requires_grad``, adapters, active adapter, merge and on/off state);
  - it ended without an interrupt (a per-line timer turns a hang into a failure);
  - a run it started ended; a run that ended ``failed`` says why in one line;
  - the working folder's files are untouched, and the shell still runs a cell.
Sizes that only make a run long (steps, processes, tokens) get small values: a hang must come from a bug, not from
a legitimately long run.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import threading
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from helpers import chat_tokenizer, make_b_nonzero, tiny_gpt2, tiny_mlp
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from traitlets import Bool, Enum, Float, Int, Unicode

import lora_nb
from lora_nb.cmd import VERBS
from lora_nb.core import registry
from lora_nb.magics import LoraMagics

LINE_SECONDS = 60  # no line may take longer (a hang is a failure, not a wait); lines take < 3 s on an idle machine
MODELS = ("gpt", "mlp", "plain")
# variables of every kind the namespace holds, and names that are not there
VARIABLES = ("gpt", "mlp", "plain", "gpt.transformer", "mlp.0", "texts", "tok", "pairs", "xy", "ids", "x", "num",
             "weird", "none", "word", "fn", "items", "empty", "chats", "prompts", "gpt.nope", "missing", "gtp")
PARTS = ("gpt.transformer", "gpt.transformer.h", "mlp.0")
PATHS = ("out", "sub/dir", "notes.txt", "keep", ".", "..", "/", "/proc/nope", "''", "'~'", "'a b'", "out/../out")
NUMBERS = ("0", "1", "2", "-1", "0.5", "1e-3", "nan", "inf", "-inf", "1e400", "x", "''", "3.7", "--")
TEXTS = ("default", "second", "mix", "a,b", "default,second", "q", "c_attn", "0,2", "'.*'", "'('", "auto", "svd",
         "cat", "true", "false", "'Once upon'", "h.1", "'é ✓'", "-x", "--r", "'a\"b'")
# sizes that only make a line long: small values only (a huge one is a long run, not a bug)
BOUNDED = {"steps": ("1", "2", "0", "-1", "x"), "processes": ("1", "1", "0", "-1", "x"), "epochs": ("1", "0.5", "0", "x"),
           "max_new_tokens": ("1", "3", "0", "-1", "x"), "sample_tokens": ("1", "2", "0"), "top_k": ("1", "3", "0"),
           "sizes": ("8", "4,8", "0", "x"), "batch_size": ("2", "4", "0", "-1", "x"), "max_length": ("8", "16", "0", "x"),
           "r": ("1", "2", "4", "0", "-1", "x", "2.5", "nan"), "eval_every": ("1", "2", "0", "x"),
           "save_every": ("1", "2", "0", "x"), "spectra_every": ("0", "1", "x"), "sample_every": ("1", "2", "0", "x")}
DATA_LIKE = {"data": ("texts", "pairs", "chats", "xy") * 3, "eval_data": ("texts", "pairs") * 3,
             "tokenizer": ("tok",) * 6, "prompts": ("prompts",) * 6, "inputs": ("ids", "x") * 3}
CAREFUL = {**DATA_LIKE, "adapter": ("default", "second"), "other": ("default", "second"), "name": ("second", "mix"),
           "adapters": ("default,second", "default"), "weights": ("0.7,0.3", "1"), "targets": ("auto", "0,2", "c_attn"),
           "layers": ("h.1", "0"), "path": ("out", "sub/dir"), "save_dir": ("ckpt",), "resume": ("ckpt",),
           "prompt": ("'w1 w2'",), "metric": ("fn",), "loss_fn": ("fn",), "sample_prompts": ("prompts",),
           "module": ("transformer.h.0.attn.c_attn", "0")}
FITTING = {"gpt": {"data": ("texts", "chats"), "eval_data": ("texts",), "inputs": ("ids",), "tokenizer": ("tok",)},
           "mlp": {"data": ("pairs",), "eval_data": ("pairs",), "inputs": ("x",), "layers": ("0", "2")}}
VERB_NAMES = sorted(VERBS)


# ------------------------------------------------------------------- the shell and its namespace


def namespace() -> dict:
    """Fresh tiny models (one adapted LM, one adapted MLP, one plain MLP) and variables of every kind."""
    gpt, mlp = tiny_gpt2(), tiny_mlp()
    lora_nb.attach(gpt, r=2)
    lora_nb.attach(mlp, r=2, targets="0,2")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g)
    words = [" ".join(f"w{(i * 7 + j) % 90}" for j in range(6)) for i in range(6)]
    return dict(gpt=gpt, mlp=mlp, plain=tiny_mlp(), texts=words, tok=chat_tokenizer(),
                pairs=list(zip(x, x[:, :5].argmax(1))), xy=(torch.randn(8, 5, generator=g), torch.randn(8, 5)),
                ids=torch.randint(1, 90, (2, 6), generator=g), x=x, num=3, weird=object(), none=None, word="w1 w2",
                fn=lambda *a: 1.0, items=[1, 2, 3], empty=[], prompts=["w1 w2", "w3"],
                chats=[{"messages": [{"role": "user", "content": "w1"}, {"role": "assistant", "content": "w2"}]}] * 4)


@pytest.fixture
def shell(tmp_path_factory):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "lora_nb")
    cwd, threads = os.getcwd(), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread (two threads' LAPACK spin badly on a loaded 2-core machine)
    work = tmp_path_factory.mktemp("fuzz-cwd")
    os.chdir(work)
    (work / "notes.txt").write_text("mine")
    (work / "keep").mkdir()
    (work / "keep" / "data.txt").write_text("also mine")
    try:
        yield ip
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)
        ip.config.pop("LoraMagics", None)
        magics = next(c for c in ip.configurables if isinstance(c, LoraMagics))
        for name, trait in magics.traits(config=True).items():
            setattr(magics, name, trait.default_value)
        for key in [k for k in ip.user_ns if not k.startswith("_") and k not in ip.user_ns_hidden]:
            ip.user_ns.pop(key, None)


def working_files() -> dict[str, bytes]:
    return {p: open(p, "rb").read() for p in ("notes.txt", os.path.join("keep", "data.txt"))}


# ------------------------------------------------------------------- lines from the parsers


def _careful(action: argparse.Action, model: str) -> tuple[str, ...]:
    """Values of the kind an option takes (for ``model``), judged from its name, type and default."""
    if action.dest in FITTING.get(model, {}):
        return FITTING[model][action.dest]
    if action.dest in CAREFUL:
        return CAREFUL[action.dest]
    if action.type in (int, float) or (isinstance(action.default, (int, float)) and action.default is not True):
        return ("1", "2") if action.type is int or isinstance(action.default, int) else ("0.5", "1e-3", "1")
    return TEXTS[:6]


def _value(rnd: random.Random, action: argparse.Action, careful: bool, model: str = "") -> str:
    """A value for one option: ``careful`` (its kind), or else half the time hostile (choices and a wrong one,
    small and wrong sizes, any number, text, path or variable)."""
    if action.dest in BOUNDED:
        values = BOUNDED[action.dest]
        return rnd.choice(values[:2] if careful or rnd.randint(0, 1) else values)
    if action.choices:
        return rnd.choice([*map(str, action.choices), *([] if careful else ["bogus"])])
    if careful or rnd.randint(0, 1):
        return rnd.choice(_careful(action, model))
    if action.dest in ("path", "save_dir", "resume"):
        return rnd.choice(PATHS)
    if action.dest in DATA_LIKE:  # mostly the right kind, sometimes any variable
        return rnd.choice(DATA_LIKE[action.dest] + VARIABLES)
    return rnd.choice(VARIABLES + NUMBERS + TEXTS + PATHS)


def lora_line(rnd: random.Random) -> tuple[str, str | None]:
    """``(line, cell body or None)`` for one verb, from its parser: a model, positionals, some options."""
    name = rnd.choice(VERB_NAMES)
    parser = VERBS[name].parser
    words, body = [name], []
    careful = rnd.randint(0, 1) == 0  # half the lines use only values of the right kind
    for action in parser._actions:
        if action.option_strings:
            continue
        if action.dest == "model":
            words.append(rnd.choice(("gpt", "mlp") * 3 + MODELS) if careful or rnd.randint(0, 4) else
                         rnd.choice(VARIABLES + PARTS * 4))  # parts of adapted models: often
        elif rnd.randint(0, 5):  # a positional is sometimes left out
            words.append(_value(rnd, action, careful, words[1] if len(words) > 1 else ""))  # `watch`: no model
    options = [a for a in parser._actions if a.option_strings]
    chosen = rnd.sample(options, rnd.randint(0, min(4, len(options))))
    for action in options:  # required options are usually given, and a run always has a small bound
        needed = action.required or (careful and action.dest == "tokenizer" and "gpt" in words)
        if action not in chosen and ((needed and rnd.randint(0, 9)) or action.dest == "steps"):
            chosen.append(action)
    in_cell = rnd.randint(0, 3) == 0
    for action in chosen:
        flag = rnd.choice(action.option_strings)
        if isinstance(action, argparse._StoreTrueAction):
            value = None if not in_cell else rnd.choice(("true", "false", "maybe", ""))
        else:
            value = _value(rnd, action, careful, words[1] if len(words) > 1 else "")
        if in_cell:
            key = flag.lstrip("-") if rnd.randint(0, 19) else "nokey"
            body.append(f"{key}: {value.strip(chr(39)) if value else ''}" + rnd.choice(("", "  # note")))
        else:
            words += [flag] if value is None else [flag, value]
    if rnd.randint(0, 39) == 0:
        words.insert(rnd.randint(1, len(words)), rnd.choice(("--nope", "-h", "'", "\\", "extra")))
    return " ".join(words), ("\n".join(body) + "\n" if in_cell else None)


def config_line(rnd: random.Random) -> str:
    """``LoraMagics.NAME = VALUE`` for one of the magics' configurable traits, careful or hostile."""
    traits = LoraMagics.class_traits(config=True)
    name = rnd.choice(sorted(traits))
    trait = traits[name]
    careful = {Enum: [repr(v) for v in getattr(trait, "values", ())], Float: ["1.0", "4.0"], Int: ["4", "16"],
               Bool: ["True", "False"], Unicode: ["'cpu'", "'auto'"]}
    hostile = ["'tpu'", "-1", "0", "1e9", "float('nan')", "float('inf')", "'x'", "None", "[]", "'cuda:7'"]
    return f"LoraMagics.{name} = {rnd.choice([*next((v for k, v in careful.items() if isinstance(trait, k)), []), *hostile])}"


def line_batch(rnd: random.Random, n: int) -> list[tuple[str, str, str | None]]:
    """``n`` lines: ``("%lora", line, cell or None)``, and one in seven ``("%config", line, None)``."""
    return [("%config", config_line(rnd), None) if rnd.randint(0, 6) == 0 else ("%lora", *lora_line(rnd))
            for _ in range(n)]


# ------------------------------------------------------------------- invariants


def model_state(model) -> dict:
    """What a refused line must leave as it was: parameters, flags, adapters, active, merged and on/off."""
    session = registry.find(model)
    layers = [m for m in model.modules() if hasattr(m, "merged_adapters") and hasattr(m, "disable_adapters")]
    return {
        "params": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        # whether it has a session, not which object: a refused `attach --replace` puts the old adapter back in a new
        # session object when it was the only one (adapters, weights and flags as before)
        "session": session is not None,
        "adapters": session.adapters if session is not None else None,
        "active": session.active if session is not None else None,
        "merged": [tuple(m.merged_adapters) for m in layers],
        "off": [m.disable_adapters for m in layers],
        "training": model.training,
    }


def same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys() or a["params"].keys() != b["params"].keys():
        return False
    params = all(pa[1] == pb[1] and torch.equal(pa[0], pb[0]) for pa, pb in
                 zip(a["params"].values(), b["params"].values()))
    return params and all(a[k] == b[k] for k in a if k != "params")


class Hung(Exception):
    pass


@contextmanager
def deadline(seconds: float):
    """A line that runs past ``seconds`` fails (it would need an interrupt). The alarm interrupts the line; it is
    also recorded, since an exception raised inside a callback (e.g. the garbage collector's) may be swallowed."""
    rang: list[float] = []

    def ring(*_):
        rang.append(seconds)
        raise Hung(f"the line ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not rang, f"the line ran past {seconds} s"


def runs(ns: dict) -> list:
    found = []
    for name in MODELS:
        session = registry.find(ns[name]) if isinstance(ns.get(name), torch.nn.Module) else None
        if session is not None and session.run is not None:
            found.append(session.run)
    return found


def run_line(ip, kind: str, line: str, cell: str | None, capsys) -> str:
    """Run one line under every invariant of this module; how it ended: worked, refused or config."""
    ns = ip.user_ns
    before = {name: model_state(ns[name]) for name in MODELS}
    files = working_files()
    refused = None
    capsys.readouterr()
    with deadline(LINE_SECONDS):
        try:
            if kind == "%config":
                ip.run_line_magic("config", line)
            elif cell is None:
                ip.run_line_magic("lora", line)
            else:
                ip.run_cell_magic("lora", line, cell)
        except UsageError as exc:
            refused = str(exc)
        for run in runs(ns):  # a run this line started in the background ends by itself
            run.stop() if run.state == "paused" else None
            assert run.wait(timeout=LINE_SECONDS).done, f"`{line}`: its run did not end"
            if run.state == "failed":
                assert run.message and "\n" not in run.message.strip(), f"`{line}`: failed run message {run.message!r}"
    where = f"`{kind} {line}`" + (f" with cell {cell!r}" if cell else "")
    if kind == "%config":  # traitlets logs a refused value as one error line
        err = capsys.readouterr().err
        assert "Traceback" not in err, f"{where}: {err}"
    if refused is not None:
        assert refused.strip() and "\n" not in refused.strip(), f"{where}: a refusal of several lines: {refused!r}"
        assert "Traceback" not in refused
        for name in MODELS:
            assert same(before[name], model_state(ns[name])), f"{where} was refused but changed `{name}`: {refused}"
    assert os.path.isdir(os.getcwd()) and working_files() == files, f"{where} changed the working folder's files"
    for name in MODELS:  # a session and its model agree after every line: later verbs work
        if registry.find(ns[name]) is not None:
            lora_nb.status(ns[name])
    assert threading.active_count() < 50
    return "config" if kind == "%config" else "refused" if refused is not None else "worked"


def check_shell_works(ip) -> None:
    result = ip.run_cell("fuzz_probe = 40 + 2", store_history=False)
    assert result.success and ip.user_ns["fuzz_probe"] == 42


# ------------------------------------------------------------------- the properties

EXAMPLE_LINES = 10  # lines per example, on fresh models


def _fuzz(shell, capsys, batch, counts: Counter) -> None:
    shell.user_ns.update(namespace())
    for kind, line, cell in batch:
        counts[run_line(shell, kind, line, cell, capsys)] += 1
    check_shell_works(shell)


# hypothesis draws each example's seed (its own generation favours simple values: few distinct lines); the lines
# come from a plain Random with that seed, so each example is ten lines drawn evenly from the parsers' options
BATCH = st.integers(0, 2**32 - 1).map(lambda n: line_batch(random.Random(n), EXAMPLE_LINES))
COMMON = dict(deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])


def fuzz(shell, capsys, fuzz_seed: int, examples: int) -> Counter:
    """``examples`` × ``EXAMPLE_LINES`` lines from hypothesis seed ``fuzz_seed``; counts of how each line ended."""
    counts: Counter = Counter()
    seed(fuzz_seed)(settings(max_examples=examples, **COMMON)(given(batch=BATCH)(
        lambda batch: _fuzz(shell, capsys, batch, counts))))()
    print(f"fuzz seed {fuzz_seed}: {sum(counts.values())} lines, {dict(counts)}")
    return counts


def test_every_line_works_or_is_refused_in_one_line_and_changes_nothing(shell, capsys):
    """200 examples × 10 lines = 2,000 lines, seeded: the same lines every run."""
    counts = fuzz(shell, capsys, 2126, 200)
    assert sum(counts.values()) == 2000
    assert counts["worked"] > 300 and counts["refused"] > 300 and counts["config"] > 100  # both kinds, in numbers


@pytest.mark.slow
@pytest.mark.parametrize("fuzz_seed", [1, 2, 3, 4, 5])
def test_many_more_lines_in_the_slow_stage(shell, capsys, fuzz_seed):
    """5 more seeds × 300 examples × 10 lines = 15,000 lines."""
    assert sum(fuzz(shell, capsys, fuzz_seed, 300).values()) == 3000


# ------------------------------------------------------------------- what random lines found, one story each


def lora(ip, line: str, cell: str | None = None):
    return ip.run_line_magic("lora", line) if cell is None else ip.run_cell_magic("lora", line, cell)


def refused(ip, line: str) -> str:
    with pytest.raises(UsageError) as info:
        lora(ip, line)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.fixture
def notebook(ip, tmp_path, monkeypatch):
    """An empty working folder, an adapted tiny GPT-2 with a non-zero update, and variables of several kinds."""
    monkeypatch.chdir(tmp_path)
    ip.user_ns.update(namespace())
    make_b_nonzero(ip.user_ns["gpt"])
    return ip


@pytest.mark.parametrize("path", ["''", ".", "./", "..", "/", "sub/..", "'~/..'"])
def test_save_never_replaces_the_working_folder_or_a_parent(notebook, tmp_path, path):
    message = refused(notebook, f"save gpt {path}")
    assert "the working folder or one of its parents" in message or "must be a folder path" in message
    assert os.getcwd() == str(tmp_path) and os.listdir(tmp_path) == []  # nothing written, nothing replaced
    assert notebook.run_cell("1 + 1").success


def test_every_written_path_is_checked_before_anything_is_written(notebook, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "data.txt").write_text("mine too")
    cases = {
        "save gpt notes.txt": "is a file",
        "save gpt folder": "is not a saved adapter folder",
        "save gpt notes.txt/sub": "is a file",
        "save gpt /proc/nope": "cannot create a folder in /proc",
        "export gpt /proc/nope --data texts --tokenizer tok": "cannot create a folder in /proc",
        "export gpt folder --data texts --tokenizer tok": "is not an export folder",
        "export gpt . --data texts --tokenizer tok": "the working folder",
        f"save gpt {'n' * 300}": "longer than 255 bytes",
        "train gpt --data texts --tokenizer tok --steps 1 --save-every 1 --save-dir /proc/nope": "cannot create",
        "train gpt --data texts --tokenizer tok --steps 1 --save-every 1 --save-dir ..": "the working folder",
    }
    for line, expected in cases.items():
        assert expected in refused(notebook, line), line
    assert sorted(os.listdir(tmp_path)) == ["folder", "notes.txt"] and os.listdir(tmp_path / "folder") == ["data.txt"]
    assert registry.find(notebook.user_ns["gpt"]).run is None  # no run started


def test_variables_are_checked_for_their_kind_before_use(notebook, tmp_path):
    ns = notebook.user_ns
    before = model_state(ns["gpt"])
    assert "tokenizer must be a tokenizer" in refused(notebook, "export gpt out --data texts --tokenizer texts")
    assert not (tmp_path / "out").exists()  # refused before the folder was made
    assert "takes token ids" in refused(notebook, "compare gpt --inputs x")
    assert "the training data's inputs: a torch.float32 tensor" in refused(notebook, "train gpt --data xy --steps 1")
    assert registry.find(ns["gpt"]).run is None  # refused before a run started
    assert "loss_fn must be a function" in refused(notebook, "train mlp --data pairs --loss num --steps 1")
    assert "tokenizer must be a tokenizer" in refused(notebook, "compare gpt --prompt hi --tokenizer word")
    assert "`num` is an int" in refused(notebook, "status num")
    assert "`weird` is an object" in refused(notebook, "attach weird")
    assert same(before, model_state(ns["gpt"]))
    out = lora(notebook, "compare gpt --inputs ids")  # the right kinds still work
    assert out.max_abs > 0


class Fragile(torch.nn.Module):
    """A model whose forward raises on inputs with a negative first entry (a bug in the user's code)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.flatten()[0] < 0:
            raise KeyError("bad row")
        return self.fc(x)


def test_an_error_inside_the_users_model_is_one_line_and_the_model_is_untouched(notebook):
    ns = notebook.user_ns
    ns["fragile"], ns["bad"], ns["good"] = Fragile(), -torch.ones(2, 4), torch.ones(2, 4)
    lora(notebook, "attach fragile --r 2")
    lora(notebook, "merge fragile")
    before = model_state(ns["fragile"])
    assert refused(notebook, "compare fragile --inputs bad") == \
        "Fragile's forward (compare) raised KeyError: 'bad row'"
    assert same(before, model_state(ns["fragile"]))  # merged, on, eval mode: as before
    lora(notebook, "unmerge fragile")
    ns["bad_pairs"] = [(-torch.ones(4), torch.tensor(0))] * 4
    before = model_state(ns["fragile"])
    plan = lora(notebook, "plan fragile --data bad_pairs --batch-size 2")  # the plan notes what it could not measure
    assert "activations not measured: KeyError: 'bad row'" in plan
    assert same(before, model_state(ns["fragile"]))
    assert "max |Δ|" in str(lora(notebook, "compare fragile --inputs good"))


def test_config_values_are_validated_when_set(notebook, caplog):
    import logging

    magics = next(c for c in notebook.configurables if isinstance(c, LoraMagics))
    with caplog.at_level(logging.ERROR):
        for line in ("device = 'tpu'", "default_alpha = float('nan')", "refresh_rate = float('nan')",
                     "default_alpha = float('inf')"):
            notebook.run_line_magic("config", f"LoraMagics.{line}")
    assert len(caplog.records) == 4 and all("\n" not in r.getMessage() for r in caplog.records)
    assert (magics.device, magics.default_alpha, magics.refresh_rate) == ("auto", 16, 4.0)
    assert lora(notebook, "train mlp --data pairs --steps 1").state == "finished"


def test_a_part_of_an_adapted_model_is_refused_naming_its_owner(notebook):
    ns = notebook.user_ns
    before = model_state(ns["gpt"])
    for verb in ("status", "detach", "attach", "on", "off", "merge", "spectrum", "save"):
        message = refused(notebook, f"{verb} gpt.transformer" + (" out" if verb == "save" else ""))
        assert message.startswith("`gpt.transformer` is part of `gpt`, which has LoRA adapters: give `gpt`")
    ns["body"] = ns["gpt"].transformer  # the same part under a name of its own
    assert refused(notebook, "detach body").startswith("`body` is part of `gpt`")
    with pytest.raises(lora_nb.errors.AdapterError, match="holds LoRA layers that belong to the model"):
        lora_nb.detach(ns["body"])  # the Python API refuses it too
    assert same(before, model_state(ns["gpt"]))
    assert "8 adapted modules" in str(lora(notebook, "status gpt"))


def test_a_session_notices_layers_removed_behind_its_back(notebook):
    from lora_nb.core.adapters.inject import strip_lora

    gpt = notebook.user_ns["gpt"]
    lora(notebook, "on gpt")  # builds the session's layer index
    strip_lora(gpt.transformer)  # what peft's unload on a part of the model does
    for line in ("status gpt", "toggle gpt", "advise gpt", "spectrum gpt --base", "spectrum gpt --layers h.1",
                 "weights gpt", "on gpt", "merge gpt", "save gpt out"):
        assert "were changed outside lora_nb" in refused(notebook, line), line
    print(lora(notebook, "detach gpt"))  # the way out
    assert registry.find(gpt) is None and not registry.adapters_in_layers(gpt)
    lora(notebook, "attach gpt --r 2")
    assert "8 adapted modules" in str(lora(notebook, "status gpt"))


def test_cell_keys_are_the_option_names(notebook):
    notebook.user_ns["ce"] = torch.nn.functional.cross_entropy
    run = lora(notebook, "train mlp", "data: pairs\neval: pairs\nloss: ce\nsteps: 2\n")  # --eval, --loss
    assert run.state == "finished" and run.step == 2 and run.evals and "eval_loss" in run.evals[-1]
    with pytest.raises(UsageError, match="unknown option `evl`; did you mean `eval`?"):
        lora(notebook, "train mlp", "data: pairs\nevl: pairs\n")
