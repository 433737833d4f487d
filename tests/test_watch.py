"""Watching transformers / TRL trainers: lora_nb's dashboard, history and after-run verbs on the loops people run."""

from __future__ import annotations

import time

import pytest
import torch
from helpers import chat_tokenizer, tiny_bert, tiny_llama
from transformers import Trainer, TrainerCallback, TrainingArguments

import lora_nb
from lora_nb.core import registry
from lora_nb.core.watch.logs import Rates, family, panel_of, record_of
from lora_nb.errors import LoraNBWarning, OptionError


def args_for(tmp_path, cls=TrainingArguments, **kw):
    base = dict(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=4, logging_steps=1,
                report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0)
    return cls(**{**base, **kw})


def classifier_trainer(tmp_path, **kw):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(1, 100, (32, 8), generator=g).tolist(),
                              "labels": torch.randint(0, 3, (32,), generator=g).tolist()})
    return Trainer(model=model, args=args_for(tmp_path, **kw), train_dataset=data)


def losses(log_history):
    return [(h["step"], h["loss"]) for h in log_history if "loss" in h]


def test_trainer_history_equals_log_history_and_verbs_work(tmp_path):
    trainer = classifier_trainer(tmp_path)
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert view.run.state == "finished" and view.run.step == 3
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)
    record = view.history[-1]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "seconds", "time", "memory_mb"} <= set(record)
    assert record["supervised_tokens"] > 0  # the classifier's labels, counted in its own collator
    session = registry.find(trainer.model)
    assert session.run is view.run and session.records["default"]["runs"][-1]["steps"] == 3
    assert len(view.run.spectra_history) >= 1  # ΔW's spectra recorded over the run
    assert lora_nb.advise(trainer.model).adapter == "default"
    assert len(lora_nb.spectra_history(trainer.model).steps) >= 1


def test_stop_mid_run_leaves_the_trainer_short(tmp_path):
    trainer = classifier_trainer(tmp_path, max_steps=20)
    view = lora_nb.watch(trainer, ui="text")

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                view.stop()

    trainer.add_callback(StopAtTwo())  # after the watch: the watch sees the stop at the next boundary
    trainer.train()
    assert trainer.state.global_step < 20
    assert view.run.state == "stopped" and "intact" in view.run.message


def test_fit_trains_in_the_background_and_pauses(tmp_path):
    trainer = classifier_trainer(tmp_path, max_steps=6)
    view = lora_nb.fit(trainer, ui="text")
    view.wait(120)
    assert view.run.state == "finished" and trainer.state.global_step == 6
    assert not view.thread.is_alive() and view.callback.error is None


def test_failed_run_is_ended_and_the_model_is_free(tmp_path):
    trainer = classifier_trainer(tmp_path)
    view = lora_nb.watch(trainer, ui="text")

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            raise ValueError("boom")

    trainer.add_callback(Boom())
    with pytest.raises(ValueError, match="boom"):
        trainer.train()
    assert view.run.state == "failed" and "boom" in view.run.message
    assert not registry.find(trainer.model).training  # mutating verbs work again


def test_model_without_adapter_still_has_curves(tmp_path, capsys):
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(1, 100, (16, 8), generator=g).tolist(),
                              "labels": torch.randint(0, 3, (16,), generator=g).tolist()})
    trainer = Trainer(model=tiny_bert(), args=args_for(tmp_path, max_steps=2), train_dataset=data)
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert len(view.history) == 2 and view.run.adapter == ""
    assert "no LoRA adapter" in view.run.target_note


def test_attached_model_with_two_adapters_names_the_trained_one(tmp_path):
    from datasets import Dataset

    model = tiny_bert()
    lora_nb.attach(model, r=4, targets=["query", "value"], name="a")
    lora_nb.attach(model, r=4, targets=["query", "value"], name="b")
    session = registry.find(model)
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(1, 100, (16, 8), generator=g).tolist(),
                              "labels": torch.randint(0, 3, (16,), generator=g).tolist()})
    trainer = Trainer(model=model, args=args_for(tmp_path, max_steps=2), train_dataset=data)
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert view.run.adapter == session.active and session.run is view.run


def test_watch_refuses_what_is_no_trainer():
    with pytest.raises(OptionError, match="transformers Trainer"):
        lora_nb.watch(tiny_bert())


def test_unknown_log_keys_are_kept_and_panelled():
    logs = {"loss": 1.0, "learning_rate": 1e-4, "grad_norm": 0.5, "epoch": 0.1, "rewards/correct/mean": 0.25,
            "my_metric": 3.0, "train_runtime": 9.0}
    record = record_of(logs, 2, 1.0, Rates(), 4, None)
    assert record["rewards/correct/mean"] == 0.25 and record["my_metric"] == 3.0 and "train_runtime" not in record
    assert panel_of("grpo", "rewards/correct/mean") == "reward mean (per reward function)"
    assert panel_of("grpo", "my_metric") == "my_metric"
    assert family(object()) == "trainer"



def test_every_panel_front_end_is_its_own_class(ip, capsys):
    """The trainer panels pick their front end's class once (``frontend.pick``); each draws as its front end does."""
    from types import SimpleNamespace

    from lora_nb.widgets.watch import MetricPanels, StaticMetricPanels, TextMetricPanels, WidgetMetricPanels

    assert type(MetricPanels()) is WidgetMetricPanels and type(MetricPanels(ui="static")) is StaticMetricPanels
    assert type(MetricPanels(ui="text")) is TextMetricPanels and MetricPanels(ui="text").widget is None
    run = SimpleNamespace(family="grpo", note="", target_note="watching adapter `default`", data_notes=[],
                          history=[], state="finished")
    record = {"step": 1, "loss": 1.0, "reward": 0.5, "my_metric": 3.0}
    widget, static, text = (MetricPanels(ui=mode, interval=0.0) for mode in ("widget", "static", "text"))
    for panels in (widget, static, text):
        panels.on_train_begin(run)
        panels._ipython_display_()
        panels.on_step_end(run, record)
    assert set(widget.charts) == set(widget.titles()) and len(widget.widget.children) == 1 + len(widget.titles())
    assert static.slot.updates == 1  # the text placeholder, then the picture in its place
    assert text.slot.handle is None and "my_metric: my_metric 3" in capsys.readouterr().out
    widget.on_train_end(run)
    static.on_train_end(run)
    assert widget.widget is None and static.slot.updates == 3  # both end as the picture

# -- TRL ------------------------------------------------------------------------------------------------
CHATS = [{"messages": [{"role": "user", "content": f"w{i} w{i + 1}"},
                       {"role": "assistant", "content": f"w{i + 2} w{i + 3} w{i + 4}"}]} for i in range(16)]


def test_sft_trainer_on_tiny_llama_with_chat_data(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig

    args = args_for(tmp_path, trl.SFTConfig, max_length=32, assistant_only_loss=False)
    trainer = trl.SFTTrainer(model=tiny_llama(), args=args, train_dataset=Dataset.from_list(CHATS),
                             processing_class=chat_tokenizer(), peft_config=LoraConfig(r=4, target_modules=["q_proj",
                                                                                                          "v_proj"]))
    view = lora_nb.watch(trainer, ui="text")
    with pytest.warns(LoraNBWarning, match="first batch: system/user tokens trained in 4 of 4"):
        trainer.train()  # assistant_only_loss=False trains the prompts: said before step 1, as one line
    assert view.run.family == "sft" and view.run.adapter == "default"
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)
    assert view.history[-1]["supervised_tokens"] > 0 and "tokens_per_s" in view.history[-1]
    assert view.callback.counter.report is not None  # the first batch's loss mask was checked before step 1
    assert lora_nb.advise(trainer.model).adapter == "default"


def test_dpo_trainer_panels(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig

    rows = [{"prompt": f"w{i} w{i + 1}", "chosen": f" w{i + 2}", "rejected": f" w{i + 5}"} for i in range(16)]
    args = args_for(tmp_path, trl.DPOConfig, max_length=16)
    trainer = trl.DPOTrainer(model=tiny_llama(), args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=chat_tokenizer(), peft_config=LoraConfig(r=4, target_modules=["q_proj"]))
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert view.run.family == "dpo"
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)
    titles = [title for title in view.panels.series]
    assert "rewards: chosen, rejected, margin" in titles and "preference accuracy" in titles


def test_grpo_trainer_panels(tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig

    def longer(completions, **kw):  # a toy reward: longer completions score higher
        return [float(len(c.split())) for c in completions]

    args = args_for(tmp_path, trl.GRPOConfig, per_device_train_batch_size=4, num_generations=2,
                    max_completion_length=4, beta=0.1)
    rows = [{"prompt": f"w{i} w{i + 1}"} for i in range(16)]
    trainer = trl.GRPOTrainer(model=tiny_llama(), reward_funcs=longer, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=chat_tokenizer(),
                              peft_config=LoraConfig(r=4, target_modules=["q_proj"]))
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert view.run.family == "grpo" and len(view.history) == 3
    titles = list(view.panels.series)
    assert "reward mean (per reward function)" in titles and "KL to the reference" in titles
    assert "share of groups whose rewards are all equal" in titles and "completion length" in titles


def test_the_readme_block_runs_as_written(tmp_path, monkeypatch):
    """README "Already using Trainer, TRL or Unsloth?": its block, SmolLM2 replaced by a tiny Llama."""
    pytest.importorskip("trl")
    from helpers import byte_tokenizer
    from test_readme_blocks import README, with_stand_in

    [code] = [code for _, lang, code in README if lang == "python" and code.startswith("from datasets import Dataset")]
    monkeypatch.chdir(tmp_path)
    namespace = {"tiny_llama": tiny_llama, "byte_tokenizer": byte_tokenizer}
    exec(compile(with_stand_in(code), "README.md (Trainer, TRL)", "exec"), namespace)
    view, trainer = namespace["view"], namespace["trainer"]
    assert view.run.state == "finished" and len(view.history) == 4
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)


def test_magic_watches_and_trains_in_the_background(ip, tmp_path):
    from lora_nb.cmd.complete import suggest

    trainer = classifier_trainer(tmp_path, max_steps=2)
    ip.user_ns.update(trainer=trainer, other=3)
    found = suggest(ip.user_ns, "%lora watch tr", 0, "%lora watch tr")
    assert found.items == [("trainer", "trainer")]  # Tab offers the trainers
    ip.run_line_magic("lora", "watch trainer --train --ui text")
    callback = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "WatchCallback")
    from helpers import wait_until

    wait_until(lambda: callback.run is not None and callback.run.done, timeout=120, what="the background run")
    assert callback.run.state == "finished" and trainer.state.global_step == 2
    with pytest.raises(Exception, match="transformers Trainer"):
        ip.run_line_magic("lora", "watch other")


def test_interrupt_stops_at_a_step_boundary_and_the_trainer_resumes(tmp_path):
    import signal

    trainer = classifier_trainer(tmp_path, max_steps=8, save_strategy="steps", save_steps=100)
    view = lora_nb.watch(trainer, ui="text")

    class CtrlC(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 2:
                signal.raise_signal(signal.SIGINT)  # the notebook's interrupt button, mid-step

    ctrl_c = CtrlC()
    trainer.add_callback(ctrl_c)
    trainer.train()  # no KeyboardInterrupt: the step in flight ends, then the run stops
    assert trainer.state.global_step == 3 and view.run.state == "stopped"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    checkpoint = tmp_path / "out" / "checkpoint-3"
    assert (checkpoint / "trainer_state.json").is_file()  # saved on Stop, as the trainer saves
    trainer.remove_callback(ctrl_c)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert trainer.state.global_step == 8 and view.run.state == "finished"


def test_dashboard_buttons_stop_and_pause_a_background_fit(tmp_path):
    from helpers import wait_until

    trainer = classifier_trainer(tmp_path, max_steps=400)
    view = lora_nb.fit(trainer, ui="widget")
    wait_until(lambda: view.run is not None and view.run.step >= 2, timeout=120, what="two steps")
    assert not view.dashboard.stop_button.disabled  # a background run: the buttons can be pressed
    view.dashboard._on_pause()
    assert view.run.wait_paused(60)
    held = trainer.state.global_step
    time.sleep(0.3)
    assert trainer.state.global_step == held and view.run.state == "paused"
    view.dashboard._on_pause()  # Resume
    wait_until(lambda: trainer.state.global_step > held, timeout=60, what="a step after resuming")
    view.dashboard._on_stop()
    view.wait(120)
    assert view.run.state == "stopped" and trainer.state.global_step < 400
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)


STORY = '''\
import sys; sys.path.insert(0, {tests!r})
import torch; torch.set_num_threads(1)
from datasets import Dataset
from helpers import chat_tokenizer, tiny_llama
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer
import lora_nb
%load_ext lora_nb
----
chats = Dataset.from_list([{{"prompt": [{{"role": "user", "content": f"w{{i}} w{{i + 1}}"}}],
                            "completion": [{{"role": "assistant", "content": f"w{{i + 2}} w{{i + 3}}"}}]}}
                           for i in range(16)])
trainer = SFTTrainer(model=tiny_llama(), processing_class=chat_tokenizer(), train_dataset=chats,
                     peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
                     args=SFTConfig("out", max_steps=4, per_device_train_batch_size=4, logging_steps=1, report_to=[],
                                    save_strategy="no", use_cpu=True, disable_tqdm=True, max_length=32))
view = lora_nb.watch(trainer)
----
trainer.train();
----
print(view.run.state, len(view.history), [r["loss"] for r in view.history] == [h["loss"] for h in
      trainer.state.log_history if "loss" in h])
----
%lora history trainer.model
----
%lora advise trainer.model
'''


@pytest.mark.slow  # a real kernel: about a minute on a loaded 2-core CPU
@pytest.mark.timeout(600)
def test_a_watched_sft_run_in_a_real_kernel(tmp_path):
    """A watched SFTTrainer in a Jupyter kernel: the dashboard shows in the training cell and becomes a picture of the
    whole run; the after-run verbs work on the trainer's model."""
    pytest.importorskip("trl")
    import nbformat
    from nbclient import NotebookClient
    from test_examples import _errors

    tests = str(__import__("pathlib").Path(__file__).parent)
    cells = STORY.format(tests=tests).split("----\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                   allow_errors=True).execute()
    assert not _errors(nb), _errors(nb)
    shown = [o.get("data", {}) for o in nb.cells[2].outputs if o.output_type == "display_data"]
    curves, panels = (d.get("text/plain", "") for d in shown)  # the dashboard, then the panels: pictures once done
    assert "<training curves: 4/4 steps" in curves and "<svg" in shown[0]["text/html"], curves
    assert "watching adapter `default`" in panels and "capacity:" in panels and "entropy" in panels, panels
    assert "finished 4 True" in nb.cells[3].outputs[0]["text"]
    verbs = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for cell in nb.cells[4:] for o in cell.outputs)
    assert "rank advice for adapter `default`" in verbs, verbs


@pytest.mark.slow  # SmolLM2-135M on the CPU: tens of seconds
@pytest.mark.timeout(900)
def test_sft_trainer_on_smollm2_with_chat_data(tmp_path):
    """The real chat model (converted once into the cache) with its own chat template: the watch follows TRL's
    SFTTrainer, the first batch's loss mask is checked (the answers and their end-of-turn token trained)."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from helpers import smollm2_dir
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    chats = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Is {w} a good film?"}],
                                "completion": [{"role": "assistant", "content": f"{w} is {v}."}]}
                               for w, v in (("Heat", "great"), ("Cats", "bad"), ("Up", "fine"), ("Jaws", "good"))])
    args = args_for(tmp_path, trl.SFTConfig, max_steps=2, per_device_train_batch_size=2, max_length=64)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=chats, processing_class=tok,
                             peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    view = lora_nb.watch(trainer, ui="text")
    trainer.train()
    assert view.run.state == "finished" and view.run.family == "sft"
    assert [(r["step"], r["loss"]) for r in view.history] == losses(trainer.state.log_history)
    report = view.callback.counter.report
    assert report is not None and report.check("end").ok and report.check("prompt").ok, report
    assert view.run.data_notes == []
    assert lora_nb.advise(trainer.model).adapter == "default"


def test_bare_callback_in_the_trainers_list(tmp_path, ip):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_bert(), LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS"))
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"input_ids": torch.randint(1, 100, (16, 8), generator=g).tolist(),
                              "labels": torch.randint(0, 3, (16,), generator=g).tolist()})
    watch = lora_nb.callback(ui="text")
    trainer = Trainer(model=model, args=args_for(tmp_path, max_steps=2), train_dataset=data, callbacks=[watch])
    trainer.train()
    assert watch.run.state == "finished" and [(r["step"], r["loss"]) for r in watch.history] == \
        losses(trainer.state.log_history)
    ip.user_ns["trainer"] = trainer  # the after-run verbs, as a notebook types them, on the trainer's model
    assert "rank advice for adapter `default`" in str(ip.run_line_magic("lora", "advise trainer.model"))
