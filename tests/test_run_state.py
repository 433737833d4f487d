"""The run owns its state and lifecycle: a resumed run ends in the state of the run that was never interrupted
(every field the loop carries, the summary and the capacity gauge), and one lifecycle drives any source of steps."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import gpt2_lora, tiny_mlp, token_items
from safetensors.torch import load_file

import lora_nb
from lora_nb.core.training.capacity import Capacity
from lora_nb.core.training.lifecycle import Lifecycle
from lora_nb.core.training.longrun.checkpoint_files import STATE_JSON, STATE_TENSORS
from lora_nb.core.training.run import TrainRun
from lora_nb.core.training.settings import TrainSettings

OPTIONS = dict(steps=8, batch_size=4, lr=1e-2, save_every=4, background=False)  # resumed mid-epoch
CLOCK = {"time", "seconds", "samples_per_s", "tokens_per_s", "memory_mb"}  # wall-clock readings of a step


def saved(folder):
    """(state.json without its clock and paths, state tensors) of a checkpoint folder."""
    state = json.loads((folder / STATE_JSON).read_text())
    state.pop("seconds")
    for key in ("save_dir", "resume"):
        state["settings"].pop(key)
    state["history"] = [{k: v for k, v in r.items() if k not in CLOCK} for r in state["history"]]
    return state, load_file(str(folder / STATE_TENSORS))


def test_a_resumed_run_ends_in_the_uninterrupted_runs_state(tmp_path):
    full = lora_nb.train(gpt2_lora(), token_items(), save_dir=tmp_path / "full", **OPTIONS)
    middle = tmp_path / "full" / "checkpoint-000004"
    resumed = lora_nb.train(gpt2_lora(), token_items(), resume=middle, save_dir=tmp_path / "resumed",
                            **OPTIONS)
    assert full.state == resumed.state == "finished"
    # the bug this fixes: the resumed run counted its supervised tokens from 0 (so the capacity gauge was wrong)
    assert resumed.history[-1]["supervised_tokens"] == full.history[-1]["supervised_tokens"]
    assert resumed.history[-1]["supervised_tokens"] > resumed.history[3]["supervised_tokens"] > 0

    state, tensors = saved(tmp_path / "resumed" / "checkpoint-000008")
    expected, expected_tensors = saved(tmp_path / "full" / "checkpoint-000008")
    loop_fields = {"optimizer", "scaler", "skipped_steps", "supervised_tokens", "batches_seen", "data", "rng"}
    assert loop_fields <= state.keys()
    assert state == expected  # every field: step, history, the loop's counters, data position, RNG states, ...
    assert tensors.keys() == expected_tensors.keys()
    assert any(k.startswith("optimizer.") for k in tensors) and any(k.startswith("data.") for k in tensors)
    different = [k for k in tensors if not torch.equal(tensors[k], expected_tensors[k])]
    assert different == []  # AdamW's moments, the shuffle and every RNG state, bit for bit on the CPU

    def steady(summary):
        return {k: v for k, v in summary.items() if k not in ("seconds", "message")}

    assert steady(resumed.summary()) == steady(full.summary())
    gauge = Capacity(resumed.trainable, resumed.summary()["supervised_tokens"])
    assert gauge.line() == Capacity(full.trainable, full.summary()["supervised_tokens"]).line()


class Recorded:
    """A source of steps that trains nothing: the shape of a run lora_nb watches (another trainer's steps)."""

    def __init__(self, losses, fail_at=None):
        self.losses, self.fail_at, self.calls = losses, fail_at, []

    def setup(self):
        self.calls.append("setup")

    def events(self):
        for step, loss in enumerate(self.losses, 1):
            if step == self.fail_at:
                raise RuntimeError("the trainer broke")
            yield "step", {"step": step, "loss": loss}
            if step % 2 == 0:
                yield "eval", {"step": step, "eval_loss": loss + 1}

    def outcome(self):
        return "finished", ""

    def describe(self, exc, hook):
        return f"{exc} ({hook or 'in the source'})"

    def cleanup(self, failed):
        self.calls.append(f"cleanup failed={failed}")


class Log(lora_nb.Callback):
    def __init__(self, essential=False):
        self.essential, self.seen = essential, []

    def on_train_begin(self, run):
        self.seen.append("begin")

    def on_step_end(self, run, record):
        self.seen.append(f"step {record['step']} ({run.step})")
        if self.essential and record["step"] == 2:
            raise ValueError("the view broke")

    def on_evaluate(self, run, record):
        self.seen.append(f"eval {record['step']}")

    def on_train_end(self, run):
        self.seen.append(f"end {run.state}")


def recorded_run(losses, callbacks):
    return TrainRun(tiny_mlp(), "default", TrainSettings(), len(losses), torch.device("cpu"), "cpu", "records",
                    callbacks=list(callbacks))


def test_one_lifecycle_drives_any_source_of_steps():
    log, source = Log(), Recorded([3.0, 2.0, 1.5])
    run = recorded_run(source.losses, [log])
    Lifecycle(run, source)()
    assert log.seen == ["begin", "step 1 (1)", "step 2 (2)", "eval 2", "step 3 (3)", "end finished"]
    assert [r["loss"] for r in run.history] == [3.0, 2.0, 1.5] and run.evals == [{"step": 2, "eval_loss": 3.0}]
    assert source.calls == ["setup", "cleanup failed=False"]
    assert run.done and run.summary()["final_loss"] == 1.5


@pytest.mark.parametrize("where", ["source", "essential callback"])
def test_a_failure_in_the_source_or_an_essential_callback_fails_the_run_once(where):
    log = Log(essential=where == "essential callback")
    source = Recorded([3.0, 2.0, 1.5], fail_at=3 if where == "source" else None)
    run = recorded_run(source.losses, [log])
    Lifecycle(run, source)()
    assert run.state == "failed" and run.done and log.seen[-1] == "end failed"
    assert source.calls == ["setup", "cleanup failed=True"]
    if where == "source":
        assert run.message == "the trainer broke (in the source)" and run.step == 2
    else:
        assert run.message == "the view broke (callback Log.on_step_end)" and isinstance(run.error, ValueError)
    assert "Traceback" in run.traceback


def test_the_loops_part_of_a_checkpoint_older_ones_from_their_history_weights_only_without_optimizer():
    from lora_nb.core.training.longrun.resume import Resume

    resume = Resume.__new__(Resume)  # what __init__ read from a checkpoint, without reading one
    last = {"step": 2, "time": 1.25, "supervised_tokens": 80, "skipped_steps": 1}
    resume.state = {"history": [{"step": 1, "time": 0.5, "supervised_tokens": 39}, last], "batches_seen": 2,
                    "optimizer": {"param_groups": []}, "scaler": None, "rng": {}, "data": {}}
    resume.weights_only = False
    older = resume.loop_state()  # written before the loop kept its own counters and clock
    assert (older["supervised_tokens"], older["skipped_steps"], older["seconds"]) == (80, 1, 1.25)
    resume.state.update(supervised_tokens=81, skipped_steps=0, seconds=2.0)  # the loop's own win
    assert (resume.loop_state()["supervised_tokens"], resume.loop_state()["seconds"]) == (81, 2.0)
    resume.weights_only = True
    fresh = resume.loop_state()
    assert not {"optimizer", "scaler", "rng"} & fresh.keys() and fresh["supervised_tokens"] == 81


def test_a_trainer_that_calls_back_pushes_the_same_events():
    log = Log()
    run = recorded_run([2.0, 1.0], [log])
    life = Lifecycle(run)  # no source: the events come from the trainer's own callbacks
    life.begin()
    life.record("step", {"step": 1, "loss": 2.0})
    life.record("eval", {"step": 1, "eval_loss": 2.5})
    life.end("stopped", "stopped by the trainer")
    assert log.seen == ["begin", "step 1 (1)", "eval 1", "end stopped"]
    assert run.done and run.message == "stopped by the trainer" and run.evals[-1]["eval_loss"] == 2.5
