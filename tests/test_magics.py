"""The %lora magics in a plain IPython shell: one-line errors, cell bodies, help (G1–G3, G23)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_b_nonzero, run, sample_inputs, tiny_llama, tiny_mlp
from IPython.core.error import UsageError
from peft.tuners.lora import LoraLayer

import lora_nb


def n_lora(model):
    return sum(isinstance(m, LoraLayer) for m in model.modules())


def test_typo_in_variable_suggests_the_name(ip):  # G1
    ip.user_ns["model"] = tiny_mlp()
    names = set(ip.user_ns)
    with pytest.raises(UsageError, match=r"^no variable `modle`; did you mean `model`\?$"):
        ip.run_line_magic("lora", "attach modle")
    assert set(ip.user_ns) == names and n_lora(ip.user_ns["model"]) == 0


@pytest.mark.parametrize("value", ["[1, 2]", "torch.zeros(3)", "'text'", "None"])
def test_not_a_module_names_the_type(ip, value):  # G2
    ip.run_cell(f"import torch; thing = {value}")
    with pytest.raises(UsageError, match=rf"`thing` is a {type(ip.user_ns['thing']).__name__}, not a torch.nn.Module"):
        ip.run_line_magic("lora", "attach thing")


@pytest.mark.parametrize("line, message", [
    ("attach model --r 0", "r must be a positive integer"),
    ("attach model --r x", "r must be an integer; got `x`"),
    ("attach model --alpha -1", "alpha must be positive"),
    ("attach model --bogus 3", "unrecognized arguments: --bogus"),
    ("attach model --rank 8", r"unrecognized arguments: --rank 8; did you mean `--r`\?$"),
    ("attach model --alpah 8", r"did you mean `--alpha`\?$"),
    ("attach model --target-modules q_proj", r"did you mean `--targets`\?$"),
    ("atach model", "unknown verb `atach`; did you mean `attach`"),
    ("attach model --targets lin", "matches no module"),
    ("on model --adapter x", "no LoRA adapter"),
])
def test_bad_options_are_one_line_and_change_nothing(ip, line, message):  # G3
    ip.user_ns["model"] = model = tiny_mlp()
    with pytest.raises(UsageError, match=message) as info:
        ip.run_line_magic("lora", line)
    assert "\n" not in str(info.value)
    assert n_lora(model) == 0


def test_cell_body_options(ip):
    ip.user_ns["model"] = model = tiny_llama()
    body = "r: 16   # rank\nalpha: 32\ntargets: q_proj, v_proj\ndropout: 0.05\nrslora: true\n"
    ip.run_cell_magic("lora", "attach model", body)
    config = lora_nb.core.find(model).peft.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.use_rslora) == (16, 32, 0.05, True)
    assert n_lora(model) == 4
    with pytest.raises(UsageError, match="unknown option `rank`"):
        ip.run_cell_magic("lora", "attach model", "rank: 4\n")


def test_dotted_model_path(ip):
    ip.run_cell("class Holder: pass\npipe = Holder()")
    ip.user_ns["pipe"].model = model = tiny_mlp()
    ip.run_line_magic("lora", "attach pipe.model --r 2")
    assert n_lora(model) == 3
    with pytest.raises(UsageError, match="`pipe` has no attribute `modle`; did you mean `model`"):
        ip.run_line_magic("lora", "status pipe.modle")


def test_user_story_attach_off_on_status_detach(ip, capsys):  # G23: plain shell, text output
    ip.user_ns["model"] = model = tiny_mlp()
    x = sample_inputs(model)
    base = run(model, x)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = ip.run_line_magic("lora", "attach model --r 4 --alpha 8")
    assert "3 adapted modules" in str(summary)
    make_b_nonzero(model)
    ip.run_line_magic("lora", "off model")
    assert torch.equal(run(model, x), base)
    ip.run_line_magic("lora", "on model")
    assert not torch.allclose(run(model, x), base)
    text = str(ip.run_line_magic("lora", "status model"))
    assert "default *" in text and "yes" in text
    ip.run_line_magic("lora", "detach model")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert "adapters off" in capsys.readouterr().out


def test_help_lists_verbs_with_examples(ip):
    text = ip.run_line_magic("lora", "")
    for name in ("attach", "detach", "status", "on", "off"):
        assert f"  {name}" in text
    assert "%lora attach model --r 8" in text
    assert "--targets" in ip.run_line_magic("lora", "attach -h")
    assert "attach" in ip.find_line_magic("lora").__doc__


def test_unload_extension(ip):
    ip.run_line_magic("unload_ext", "lora_nb")
    assert ip.find_line_magic("lora") is None
    ip.run_line_magic("load_ext", "lora_nb")
    assert ip.find_line_magic("lora") is not None


def test_rank_note_is_one_line_on_stderr(ip, capsys):  # G7 through the magic
    from torch import nn

    ip.user_ns["small"] = nn.Sequential(nn.Linear(20, 2))
    ip.run_line_magic("lora", "attach small --r 8")
    err = capsys.readouterr().err
    assert err.startswith("note: r=8 exceeds min(in, out)") and err.count("\n") == 1


def test_foreign_warnings_pass_through_once_and_never_hang(ip, monkeypatch):
    import warnings

    from lora_nb.cmd import attach

    def noisy_status(model):
        warnings.warn("a library's deprecation", FutureWarning, stacklevel=2)
        return "ok"

    monkeypatch.setattr(attach.core, "status", noisy_status)
    ip.user_ns["model"] = tiny_mlp()
    with pytest.warns(FutureWarning, match="a library's deprecation") as record:
        assert ip.run_line_magic("lora", "status model") == "ok"
    assert len(record) == 1


def test_each_option_says_its_default_once(ip):
    from lora_nb.cmd.router import VERBS

    for name, spec in VERBS.items():
        for action in spec.parser._actions:
            assert (action.help or "").count("(default:") <= 1, f"%lora {name} {action.option_strings}: {action.help}"
    text = ip.run_line_magic("lora", "train -h")
    assert "(default: one epoch)" in " ".join(text.split()) and "(default: None)" not in text


def test_a_comment_ends_the_line_as_in_python(ip):
    ip.user_ns["model"] = model = tiny_mlp()
    assert ip.run_cell("%lora attach model --r 2 --targets '0'   # in place; a # inside a word stays").success
    assert n_lora(model) == 1 and lora_nb.status(model).adapters[0].r == 2


def test_one_message_in_python_names_for_the_api_and_in_options_for_the_magics(ip):
    from lora_nb.errors import AdapterError

    model = tiny_mlp()
    session = lora_nb.attach(model, r=2)
    assert repr(session) == ("<lora_nb session on Sequential: adapters `default` (active); lora_nb.status(model) shows "
                             "the table>")  # at a prompt: one line, not the model and its weights
    with pytest.raises(AdapterError) as python:
        lora_nb.attach(model, r=2)
    assert str(python.value) == ("adapter `default` already exists; pass `replace=True` to replace it or `name=…` "
                                 "for another")
    ip.user_ns.update(model=model, bare=tiny_mlp())
    with pytest.raises(UsageError) as magic:
        ip.run_line_magic("lora", "attach model --r 2")
    assert str(magic.value) == "adapter `default` already exists; pass `--replace` to replace it or `--name …` for another"
    with pytest.raises(AdapterError, match=r"attach one first \(`lora_nb\.attach\(model\)`\)$"):
        lora_nb.spectra(ip.user_ns["bare"])
    with pytest.raises(UsageError, match=r"attach one first \(`%lora attach MODEL`\)$"):
        ip.run_line_magic("lora", "spectrum bare")
