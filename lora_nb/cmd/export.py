"""Verbs that take an adapter beyond the notebook: ``export`` (a script for ``accelerate launch``, a merged
transformers folder, a GGUF file for llama.cpp / Ollama, or a GGUF LoRA) and ``check`` (what a runtime would
reject or change).

Multi-process training in the notebook is ``%lora train MODEL … --processes N`` (an option of train).
"""

from __future__ import annotations

from ..core import registry
from ..core.export.api import FORMATS, QUANTS, check, export
from ..core.export.preflight import RUNTIMES
from .data_options import data_names, data_options
from .router import arg, verb


def _objects(ctx, args, keys) -> dict:
    """The data, eval data, tokenizer and loss (those in ``keys``): given on the line, else the last run's."""
    last = registry.require(ctx.model(args.model)).last_train
    remembered = last.names if last is not None else {}
    names = {key: name or remembered.get(key) for key, name in data_names(args).items() if key in keys}
    return {key: (ctx.lookup(name, key) if name else None) for key, name in names.items()}


@verb(
    "export", "write the adapter for another place: an `accelerate launch` script (default), a merged model, "
              "a GGUF file (llama.cpp, Ollama) or a GGUF LoRA",
    arg("path", help="folder to write"),
    arg("--format", choices=tuple(FORMATS), default="script",
        help="; ".join(f"{f.name}: {f.summary}" for f in FORMATS.values())),
    arg("--quant", choices=QUANTS, default=None,
        help="GGUF tensor type (" + "; ".join(f"{f.name}: default {f.default_quant}" for f in FORMATS.values()
                                              if f.default_quant) + ")"),
    arg("--metric", default=None, help="variable with a callable metric(model) -> number, measured on the live "
                                       "model and on the export loaded back ("
                                       + ", ".join(f.name for f in FORMATS.values() if f.takes_metric) + ")"),
    arg("--adapter", default=None, help="adapter to export (default: the active one)"),
    arg("--overwrite", action="store_true", help="replace the export already in PATH (atomically)"),
    *data_options(remembered=True),
    examples=["%lora export model run1", "%lora export model shipped --format gguf --quant q8_0 --tokenizer tok",
              "%lora export model merged_model --format merged --tokenizer tok --metric accuracy",
              "%lora export model /data/runs/jargon --data big_texts",
              "%lora export model shipped --format gguf --tokenizer tok --overwrite"],
    mutates="model",
)
def _export(ctx, args):
    model = ctx.model(args.model)
    metric = ctx.lookup(args.metric) if args.metric else None
    fmt = FORMATS[args.format]
    objects = _objects(ctx, args, ("data", "eval_data", "tokenizer", "loss_fn") if fmt.takes_data else ("tokenizer",))
    return export(model, args.path, format=args.format, quant=args.quant, metric=metric, adapter=args.adapter,
                  overwrite=args.overwrite, **objects)


@verb(
    "check", "pre-flight: what a runtime (peft, vLLM, llama.cpp, a merged model) would reject or change",
    arg("--for", dest="runtime", choices=RUNTIMES, default="peft", help="the runtime the adapter goes to"),
    arg("--adapter", default=None, help="adapter to check (default: the active one)"),
    examples=["%lora check model --for vllm", "%lora check model --for llama.cpp"],
    mutates="nothing",
)
def _check(ctx, args):
    return check(ctx.model(args.model), args.runtime, args.adapter)
