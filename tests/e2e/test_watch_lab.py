"""A watched SFTTrainer in a real JupyterLab 4 under headless Chromium: ``lora_nb.fit(trainer)`` shows lora_nb's
live dashboard and the trainer family's panels while TRL trains in the background, Stop ends it at a step boundary,
the view becomes pictures and the after-run verbs work on the trainer's model. Screenshots go to
``tests/e2e/screenshots/<test name>/``."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_lab import (
    check_console,
    check_live_loss,
    check_picture_left,
    check_stopped,
    click_stop,
    notebook_page,
    run_cells,
)

pytestmark = pytest.mark.e2e

TESTS = str(Path(__file__).resolve().parents[1])
SETUP = f"""\
import json, sys, time
sys.path.insert(0, {TESTS!r})
import torch; torch.set_num_threads(1)
from datasets import Dataset
from helpers import chat_tokenizer, tiny_llama
from peft import LoraConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer
import lora_nb
%load_ext lora_nb"""
TRAINER = """\
class Slow(TrainerCallback):  # a small sleep per step, so the run lasts long enough to watch
    def on_step_end(self, args, state, control, **kw):
        time.sleep(0.05)

chats = Dataset.from_list([{"prompt": [{"role": "user", "content": f"w{i} w{i + 1}"}],
                            "completion": [{"role": "assistant", "content": f"w{i + 2} w{i + 3}"}]}
                           for i in range(32)])
trainer = SFTTrainer(model=tiny_llama(), processing_class=chat_tokenizer(), train_dataset=chats,
                     peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), callbacks=[Slow()],
                     args=SFTConfig("out", max_steps=600, per_device_train_batch_size=4, logging_steps=1,
                                    report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                                    max_length=32, learning_rate=1e-3))"""
FIT = "view = lora_nb.fit(trainer)\nview"
STATE = "print(json.dumps({'state': view.run.state, 'step': trainer.state.global_step}))"
HISTORY = "%lora history trainer.model"
STORY = [SETUP, TRAINER, FIT, STATE, HISTORY]


@pytest.mark.timeout(300)
def test_watched_sft_trainer_story(lab_server, browser, screenshots):
    """fit → live loss in the browser → Stop → pictures → ranks over the run, no console errors."""
    server = lab_server()
    with notebook_page(server, browser, screenshots, STORY) as lab:
        run_cells(lab, [0, 1, 2])
        seen = check_live_loss(lab, 2)
        print("watched SFTTrainer: loss plot (points, last step):", seen)
        lab.scroll_to(2)
        lab.shot("sft-training-live")
        click_stop(lab, 2)
        final = check_stopped(lab, 3)
        print("after Stop:", final)
        assert final["step"] < 600
        lab.scroll_to(2)
        check_picture_left(lab, 2)
        lab.shot("sft-stopped")
        lab.run_cell(4)
        lab.wait_rendered(4, "svg")
        lab.scroll_to(4)
        lab.shot("sft-history")
        check_console(lab)
