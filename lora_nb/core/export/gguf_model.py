"""A merged model as one GGUF file for llama.cpp / Ollama, written in pure Python with the ``gguf`` package.

Tensor types follow llama.cpp's converter: 1-D tensors (norms, biases) and position embeddings stay F32; 2-D
weights take the asked type; a row length the quantizer's block does not divide falls back to F16 (as
``convert_hf_to_gguf.py`` does on ``QuantError``). For ``q4_0`` the token embedding and output matrix are written
``q8_0``: llama.cpp's ``llama-quantize`` also keeps those two at a higher precision (with K-quants, which the
``gguf`` package cannot write).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import OptionError
from .layout import Layout
from .merged import Merged, check_exportable, merge_aside, state_keys
from .request import Job, Shipped, listing
from .survival import Survival, kept
from .vocab import add_tokenizer, check_vocabulary, modelfile

QUANTS = ("f16", "bf16", "q8_0", "q4_0", "f32")
_KEEP_Q8 = ("token_embd.weight", "output.weight")


def qtype_of(quant: str) -> Any:
    import gguf

    if quant not in QUANTS:
        raise OptionError(f"--quant must be one of {', '.join(QUANTS)}, not `{quant}`")
    return gguf.GGMLQuantizationType[quant.upper()]


def tensor_type(name: str, shape: tuple[int, ...], quant: str) -> Any:
    """The GGML type tensor ``name`` is written in for an export at ``quant``."""
    import gguf

    kind = qtype_of(quant)
    if len(shape) < 2 or name.startswith("position_embd"):
        return gguf.GGMLQuantizationType.F32
    if quant == "q4_0" and name in _KEEP_Q8:
        kind = gguf.GGMLQuantizationType.Q8_0
    block, _ = gguf.GGML_QUANT_SIZES[kind]
    return kind if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def encode(t: torch.Tensor, kind: Any) -> np.ndarray:
    """``t`` in GGML type ``kind``, as the bytes (or floats) ``GGUFWriter.add_tensor`` takes with ``raw_dtype``.

    Float types are cast by torch (numpy's float16 cast is about 10× slower); block types by gguf's quantizers."""
    from gguf.quants import quantize

    t = t.detach().cpu().contiguous()
    if kind.name in ("F32", "F16"):
        return t.to(_FLOATS[kind.name]).numpy()
    if kind.name == "BF16":  # bytes, as gguf's own BF16 quantizer returns them (round to nearest even, alike)
        return t.to(torch.bfloat16).view(torch.uint8).numpy()
    return quantize(t.float().numpy(), kind)


def decode(data: np.ndarray, kind: Any, shape: tuple[int, ...]) -> torch.Tensor:
    from gguf.quants import dequantize

    if kind.name in _FLOATS:
        return torch.from_numpy(data).view(_FLOATS[kind.name]).reshape(shape).float()
    return torch.from_numpy(dequantize(data, kind).reshape(shape)).float()


def rounding(kind: Any):
    """Q for a GGML type: encode, then decode back to float32 (for the survival meter)."""
    return lambda t: decode(encode(t, kind), kind, tuple(t.shape))


def file_type(quant: str) -> Any:
    import gguf

    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]


def write_file(writer: Any, target: Path) -> None:
    """Write ``writer``'s header, metadata and tensors to ``target``; the file is closed on every path (a failed
    write included), so nothing stays open in the process."""
    try:
        writer.write_header_to_file(path=target)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except OSError as exc:
        if exc.errno is not None:
            raise
        # numpy's tofile reports a short write without the system's reason
        raise OSError(f"{target.name}: a short write; the disk is full or a file-size limit was reached "
                      f"({exc})") from None
    finally:
        close(writer)


def close(writer: Any) -> None:
    """Close every file ``writer`` holds, even when flushing one fails (a full disk); the first failure is raised."""
    handles, writer.fout = writer.fout or [], None
    failure = None
    for handle in handles:
        try:
            handle.close()  # a failed flush still closes the descriptor
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _tensors(merged: Merged, layout: Layout, quant: str) -> tuple[list[tuple[str, np.ndarray, Any]], Survival]:
    """``(gguf name, encoded data, type)`` per tensor, and the survival of every adapted module."""
    adapted = {a.key: a for a in merged.adapted}
    out, survival = [], Survival(f"gguf {quant}")
    for key, value in merged.state.items():
        name = layout.gguf_name(key)
        if name is None:
            continue
        data = layout.to_file(key, value.float())
        kind = tensor_type(name, tuple(data.shape), quant)
        out.append((name, encode(data, kind), kind))
        if key in adapted:
            a = adapted[key]
            survival.modules[a.name] = kept(layout.to_file(key, a.base), layout.to_file(key, a.delta), rounding(kind))
    return out, survival


def check_names(keys: Iterable[str], layout: Layout) -> None:
    """Refuse a model with tensors (state-dict ``keys``) that have no GGUF name."""
    lost = [k for k in keys if layout.gguf_name(k) is None and k != "lm_head.weight"
            and not k.endswith(("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias"))]
    if lost:
        raise OptionError(f"{len(lost)} tensor(s) have no GGUF name (e.g. `{lost[0]}`); export `merged` and convert "
                          "with llama.cpp's convert_hf_to_gguf.py")


def write_gguf(merged: Merged, layout: Layout, target: Path, quant: str, tokenizer: Any, name: str) -> tuple[
        Survival, list[str]]:
    """Write the merged model to ``target`` (a ``.gguf`` file); returns its survival reading and notes."""
    import gguf

    if tokenizer is None:
        raise OptionError("a GGUF file carries its tokenizer: pass the one the model uses (--tokenizer VAR)")
    check_names(merged.state, layout)
    tensors, survival = _tensors(merged, layout, quant)
    writer = gguf.GGUFWriter(None, layout.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    layout.write_hparams(writer)
    writer.add_file_type(file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    notes = add_tokenizer(writer, tokenizer, getattr(layout.config, "vocab_size", 0))
    for tensor_name, data, kind in tensors:
        writer.add_tensor(tensor_name, data, raw_dtype=kind)
    write_file(writer, target)
    return survival, notes + layout.notes()


def gguf_name(quant: str, what: str = "model") -> str:
    return f"{what}-{quant}.gguf"


def check(job: Job) -> None:
    """Everything a GGUF model export needs, before anything is written (``job.layout`` is set here)."""
    check_exportable(job.session, job.adapter)
    job.layout = Layout.of(job.session.model)
    check_names(state_keys(job.session.model, job.adapter), job.layout)
    check_vocabulary(job.tokenizer)


def write(job: Job, staging: Path) -> Shipped:
    """The merged model as one GGUF file and an Ollama ``Modelfile``, written into ``staging``."""
    assert job.layout is not None and job.quant is not None
    merged = merge_aside(job.model, job.adapter)
    name = gguf_name(job.quant)
    model = merged.model
    survival, notes = write_gguf(merged, job.layout, staging / name, job.quant, job.tokenizer,
                                 getattr(model, "name_or_path", "") or type(model).__name__)
    (staging / "Modelfile").write_text(modelfile(name, job.tokenizer))
    notes.append(f"Ollama: cd {job.target} && ollama create my-model -f Modelfile")
    return Shipped(job.target, job.format.name, job.quant, listing(staging), 0.0, survival, notes, name)
