"""Training an adapter: the user's story from data to a lower loss, through Python and the magic (G10, G18, G19)."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import (
    base_params,
    classification_pairs,
    lora_params,
    mlp_with_lora,
    tiny_bert,
    tiny_gpt2,
    wait_until,
    word_tokenizer,
)
from IPython.core.error import UsageError
from torch.utils.data import DataLoader, TensorDataset

import lora_nb
from lora_nb.core import registry
from lora_nb.core.training.callbacks import Callback
from lora_nb.errors import DataError, OptionError, TrainingActiveError

TEXTS = ["the cat sat on the mat", "a dog ran to the park", "the big red ball", "a cat and a dog",
         "the dog sat on a mat and ran", "a red cat ran to the big park"] * 4


def gpt2_with_lora(r=8):
    model = tiny_gpt2()
    with torch.no_grad():  # pretrained-like embedding scale: a random tiny GPT-2 has near-uniform logits
        model.transformer.wte.weight.mul_(10)
    lora_nb.attach(model, r=r)
    return model






def mean(values):
    return sum(values) / len(values)


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, run):
        self.calls.append(("begin", run.state))

    def on_step_end(self, run, record):
        self.calls.append(("step", record["step"]))

    def on_evaluate(self, run, record):
        self.calls.append(("eval", record["step"]))

    def on_train_end(self, run):
        self.calls.append(("end", run.state))


def test_gpt2_dataloader_lowers_the_loss_and_keeps_the_base_exact():  # done-when + G10
    model = gpt2_with_lora()
    base, before = base_params(model), lora_params(model)
    seq = torch.randint(1, 100, (16,), generator=torch.Generator().manual_seed(0))
    items = [{"input_ids": seq.roll(i)[:12], "labels": seq.roll(i)[:12]} for i in range(16)]
    run = lora_nb.train(model, DataLoader(items, batch_size=4, shuffle=True), steps=30, lr=1e-2)
    losses = [r["loss"] for r in run.history]
    assert run.state == "finished" and len(losses) == 30
    assert mean(losses[-5:]) < 0.8 * mean(losses[:5])
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(not torch.equal(p, before[n]) for n, p in lora_params(model).items())
    assert not model.training  # the eval mode it had before
    record = run.history[-1]
    assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "memory_mb"} <= set(record)
    assert record["epoch"] == pytest.approx(30 * 1 / 4)
    summary = registry.find(model).records["default"]["runs"][-1]
    assert summary["state"] == "finished" and summary["steps"] == 30 and summary["final_loss"] == losses[-1]
    assert summary["data"] == "DataLoader (4 batches)" and summary["batch_size"] == 8


def test_magic_trains_texts_with_a_tokenizer(ip, capsys):  # done-when: the magic in a terminal shell
    ip.user_ns.update(gpt=gpt2_with_lora(), texts=TEXTS, tok=word_tokenizer())
    run = ip.run_line_magic("lora", "train gpt --data texts --tokenizer tok --steps 10 --lr 1e-2 --wait")
    assert run.state == "finished" and run.step == 10 and not run.background
    assert run.history[-1]["loss"] < run.history[0]["loss"]
    out = capsys.readouterr().out
    assert "training adapter `default` on cpu, fp32 (no autocast on CPU unless asked): 10 steps" in out and "24 texts" in out
    assert "step 10/10" in out and "finished: 10/10 steps on cpu" in out
    last = registry.find(ip.user_ns["gpt"]).last_train
    assert last.names == {"data": "texts", "tokenizer": "tok"}
    assert last.settings["steps"] == 10 and last.settings["lr"] == 0.01


def test_text_batches_mask_padding_out_of_the_labels():
    from lora_nb.core.training.data.batches import make_batches

    batches = make_batches(["the cat", "a dog ran to the park"], tokenizer=word_tokenizer(), batch_size=2,
                           shuffle=False)
    batch = next(iter(batches.loader))
    assert batch["input_ids"].tolist() == [[2, 3, 0, 0, 0, 0], [10, 7, 8, 9, 2, 11]]
    assert batch["labels"].tolist() == [[2, 3, -100, -100, -100, -100], [10, 7, 8, 9, 2, 11]]
    assert batch["attention_mask"].sum().item() == 8


@pytest.mark.parametrize("form", ["pairs", "tensor_tuple", "tensor_dataset", "dicts", "hf_dataset", "loss_fn"])
def test_every_data_form_trains(form):
    model = mlp_with_lora()
    x, y = classification_pairs()
    kwargs = {}
    if form == "pairs":
        data = list(zip(x, y))
    elif form == "tensor_tuple":
        data = (x, y)
    elif form == "tensor_dataset":
        data = TensorDataset(x, y)
    elif form in ("dicts", "hf_dataset"):
        model = tiny_bert()
        lora_nb.attach(model, r=4)
        ids = torch.randint(1, 100, (32, 6), generator=torch.Generator().manual_seed(4))
        data = [{"input_ids": i, "labels": int(i[0] % 3)} for i in ids]
        if form == "hf_dataset":
            datasets = pytest.importorskip("datasets")
            data = datasets.Dataset.from_list([{"input_ids": i.tolist(), "labels": d["labels"], "note": "x"}
                                               for i, d in zip(ids, data)])
    else:
        data = TensorDataset(x, y)
        kwargs["loss_fn"] = lambda model, batch: torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
    run = lora_nb.train(model, data, steps=12, lr=2e-2, batch_size=8, **kwargs)
    assert run.state == "finished", run.message
    assert run.history[-1]["loss"] < run.history[0]["loss"]


def test_loss_fn_output_target_and_grad_accum_and_schedule():
    model = mlp_with_lora()
    x, y = classification_pairs()
    seen = []

    def mse(output, target):
        seen.append(output.shape[0])
        return torch.nn.functional.mse_loss(output, torch.nn.functional.one_hot(target, 5).float())

    run = lora_nb.train(model, (x, y), loss_fn=mse, steps=10, batch_size=4, grad_accum=3, lr=1e-2, warmup=2,
                        schedule="linear")
    assert run.state == "finished" and len(seen) == 30 and set(seen) == {4}
    assert run.history[0]["samples_per_s"] > 0
    lrs = [r["lr"] for r in run.history]
    assert lrs[:3] == pytest.approx([5e-3, 1e-2, 1e-2]) and lrs[-1] == pytest.approx(1e-2 * 1 / 8)


def test_epochs_eval_and_callback_order():
    model = mlp_with_lora()
    x, y = classification_pairs(40)
    rec = Recorder()
    run = lora_nb.train(model, (x, y), eval_data=(x[:16], y[:16]), epochs=2, batch_size=8, eval_every=4,
                        callbacks=[rec])
    assert run.max_steps == 10 and run.step == 10
    assert [e["step"] for e in run.evals] == [4, 8, 10]
    assert all(e["eval_loss"] > 0 for e in run.evals)
    assert rec.calls[0] == ("begin", "running") and rec.calls[-1] == ("end", "finished")
    assert rec.calls.index(("eval", 4)) == rec.calls.index(("step", 4)) + 1


@pytest.mark.parametrize("data, kwargs, message", [
    (TEXTS, {}, "texts need a tokenizer"),
    ([], {}, "the training data is empty"),
    (iter([1, 2]), {}, "one-shot iterator"),
    ([torch.zeros(3)] * 4, {}, "items of type Tensor are not trainable data"),
    (42, {}, "cannot train on an int"),
    ((torch.zeros(4, 16), torch.zeros(3)), {}, "inputs and targets differ in length"),
])
def test_unusable_data_is_one_line_and_starts_nothing(data, kwargs, message):
    model = mlp_with_lora()
    before = lora_params(model)
    with pytest.raises(DataError, match=message) as info:
        lora_nb.train(model, data, steps=3, **kwargs)
    assert "\n" not in str(info.value)
    assert registry.find(model).run is None
    assert all(torch.equal(p, before[n]) for n, p in lora_params(model).items())


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be ≥ 1"),
    ({"lr": -1}, "lr must be positive"),
    ({"steps": 3, "epochs": 1}, "steps or epochs, not both"),
    ({"schedule": "cosin"}, "schedule must be one of cosine, linear, constant"),
    ({"device": "cuda:7"}, "not available here|does not exist"),
    ({"device": "tpu-ish"}, "device must be auto"),
    ({"bogus": 1}, "unknown training option"),
])
def test_bad_settings_are_one_line(kwargs, message):
    model = mlp_with_lora()
    with pytest.raises(OptionError, match=message):
        lora_nb.train(model, classification_pairs(), **kwargs)


def test_wrong_default_loss_fails_the_run_with_a_hint():
    model = mlp_with_lora()
    x = torch.randn(16, 16)
    run = lora_nb.train(model, (x, torch.randn(16, 5)), steps=3)
    assert run.state == "failed" and run.step == 0
    assert "default cross-entropy needs class logits" in run.message and "MSELoss" in run.message


def _trainer_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lora_nb-train")]


def test_background_run_refuses_mutations_then_stops(ip, capsys):  # G18 + G19
    model = mlp_with_lora()
    ip.user_ns.update(model=model, pairs=classification_pairs())
    run = ip.run_line_magic("lora", "train model --data pairs --steps 100000 --background")
    assert run.background and _trainer_threads()
    wait_until(lambda: run.step >= 3, what="3 steps")
    for call in (lambda: lora_nb.attach(model, name="second"), lambda: lora_nb.detach(model),
                 lambda: lora_nb.disable(model), lambda: lora_nb.enable(model),
                 lambda: lora_nb.delete(model, "default"),
                 lambda: lora_nb.train(model, classification_pairs(), steps=2)):
        with pytest.raises(TrainingActiveError, match="training is running; stop it first"):
            call()
    for line in ("detach model", "off model", "attach model --name second"):
        with pytest.raises(UsageError, match="training is running; stop it first"):
            ip.run_line_magic("lora", line)
    assert lora_nb.status(model).training == "running"  # read-only commands work
    ip.run_line_magic("lora", "pause model")
    assert run.state == "paused" and lora_nb.status(model).training == "paused"
    ip.run_line_magic("lora", "resume model")
    at_stop = run.step
    ip.run_line_magic("lora", "stop model")
    assert run.done and run.state == "stopped" and run.step <= at_stop + 2
    out = capsys.readouterr().out  # a background run at a terminal prompt: its first lines and its end, once
    assert out.count("stopped at step") == 1 and "step 1/100000 ·" not in out and out.startswith("training adapter")
    assert not _trainer_threads() and not run._thread.is_alive()
    assert "stopped at step" in run.message
    lora_nb.disable(model)  # mutations work again
    ip.run_line_magic("lora", "stop model")  # nothing to stop: one line, nothing changed, no error
    assert capsys.readouterr().out.splitlines()[-1] == f"no training is running on `model` (last run {run.message})"
    assert run.message.startswith("stopped at step")  # the state said once, not `stopped: stopped at …`


def test_add_callback_to_a_running_run_catches_up():
    model = mlp_with_lora()
    run = lora_nb.train(model, classification_pairs(), steps=100000, background=True)
    wait_until(lambda: run.step >= 2, what="2 steps")
    late = Recorder()
    run.add_callback(late)
    wait_until(lambda: any(c[0] == "step" for c in late.calls), what="a step reaching the late callback")
    run.stop()
    run.wait(10)
    assert late.calls[0] == ("begin", "running") and late.calls[-1] == ("end", "stopped")
    ended = Recorder()
    run.add_callback(ended)  # a run that already ended: begin then end, at once
    assert ended.calls == [("begin", "stopped"), ("end", "stopped")]


def test_the_end_line_compares_averaged_losses_not_two_batches():
    from lora_nb.core.training.reporting import loss_change, loss_ends

    losses = [5.0, 4.0, 6.0, 3.0, 2.0, 4.0, 3.0, 5.0, 1.0, 2.0, 4.5, 2.5]  # 12 steps: means of 3 at each end
    assert loss_ends(losses) == (5.0, 3.0, 3)
    assert loss_change(losses) == "loss 5 → 3 (means of the first and last 3 steps)"
    assert loss_ends(list(range(200)))[2] == 20 and loss_ends([1.0, 2.0, 3.0]) == (1.0, 3.0, 1)
    assert loss_change([2.5]) == "loss 2.5" and loss_change([]) == ""
    model = mlp_with_lora()
    run = lora_nb.train(model, classification_pairs(64), steps=8, batch_size=8)
    first, last, k = loss_ends([r["loss"] for r in run.history])
    assert k == 2 and f"loss {first:.4g} → {last:.4g} (means of the first and last 2 steps)" in run.message
