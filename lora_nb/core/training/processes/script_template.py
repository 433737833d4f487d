"""Continue a lora_nb training run outside the notebook, on any number of GPUs, CPUs or nodes.

    accelerate launch --num_processes N train.py          # N GPUs (add --cpu for N CPU processes)

Written by lora_nb $VERSION on $WHEN for a `$MODEL_TYPE` with adapter `$ADAPTER`. Beside it:
base/ (the base model), adapter/ (the adapter in PEFT format, as it was when exported) and
data/ (the training data, when it could be saved). It trains the adapter with lora_nb's own
training loop, data-parallel over the launched processes (SETTINGS["batch_size"] samples per
process and step), and writes output/adapter (PEFT format) and output/history.json.
Needs: pip install lora-nb  (torch, transformers, peft, accelerate).
"""

import json
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SETTINGS = json.loads(r'''$SETTINGS''')  # lora_nb.core.training.run.TrainSettings; edit freely
MODEL = json.loads(r'''$MODEL''')  # how the base model is rebuilt from base/
DATA = json.loads(r'''$DATA''')  # {"train": ..., "eval": ...}: where each part of the data is
TOKENIZER = json.loads(r'''$TOKENIZER''')  # folder of a saved tokenizer (text data), or None
LOSS = json.loads(r'''$LOSS''')  # loss_fn: None = the data's own loss (model(**batch).loss, or cross-entropy for pairs)


def load_model() -> torch.nn.Module:
    """The base model, as it was in the notebook (without any adapter)."""
    if MODEL["kind"] == "transformers":
        import importlib

        cls = getattr(importlib.import_module(MODEL["module"]), MODEL["class"])
        return cls.from_pretrained(HERE / MODEL["path"])
    # a plain nn.Module, pickled with torch.save: its class must be importable here
    return torch.load(HERE / MODEL["path"], weights_only=False)


def load_data(part: str):
    """The ``part`` ("train" or "eval") of the data, or None."""
    entry = DATA.get(part)
    if entry is None:
        return None
    if entry["kind"] == "missing":
        raise SystemExit(f"the {part} data was not exported ({entry['why']}): write load_data() in {__file__}")
    if entry["kind"] == "datasets":
        import datasets

        return datasets.load_from_disk(str(HERE / entry["path"]))
    return torch.load(HERE / entry["path"], weights_only=True)  # tensors, lists, dicts, str: no code runs


def load_loss():
    if LOSS is None:
        return None
    if "missing" in LOSS:
        raise SystemExit(f"the loss_fn was not exported ({LOSS['missing']}): define it in load_loss() in {__file__}")
    return getattr(torch.nn, LOSS["torch.nn"])()


def main() -> None:
    import lora_nb
    from lora_nb.core.training.processes.export import launched_run

    model = load_model()
    lora_nb.load(model, HERE / "adapter", name=MODEL["adapter"])
    tokenizer = None
    if TOKENIZER is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(HERE / TOKENIZER)
    launched_run(model, load_data("train"), load_data("eval"), tokenizer, load_loss(), SETTINGS, HERE / "output")


if __name__ == "__main__":
    main()
