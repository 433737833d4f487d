"""Verbs that attach, remove, inspect and switch adapters."""

from __future__ import annotations

from .. import core
from ..core.adapters.options import AttachOptions
from .router import arg, options_of, verb, with_settings

# attach options whose default is a notebook setting (`%config LoraMagics.default_r`)
_NOTEBOOK = {"r": "default_r", "alpha": "default_alpha"}


@verb(
    "attach", "inject a LoRA adapter in place; the model now runs with it",
    *options_of(AttachOptions, notebook=_NOTEBOOK),
    examples=["%lora attach model --r 8 --alpha 16 --targets q_proj,v_proj",
              "%lora attach model --name second --r 4 --targets 'layers\\.[0-3]\\..*proj'"],
    mutates="model",
)
def _attach(ctx, args):
    options = with_settings({k: v for k, v in vars(args).items() if k != "model"}, ctx.settings, _NOTEBOOK)
    core.attach(ctx.model(args.model), **options)
    return core.status(ctx.model(args.model))


@verb("detach", "remove every adapter; base parameters are exactly as before attach",
      examples=["%lora detach model"], mutates="model")
def _detach(ctx, args):
    core.detach(ctx.model(args.model))
    print(f"LoRA removed from `{args.model}`; its base weights are unchanged")


@verb("status", "table of adapters: active, enabled, merged, layers, parameters",
      examples=["%lora status model"], mutates="nothing")
def _status(ctx, args):
    return core.status(ctx.model(args.model))


@verb("on", "enable adapters (with --adapter: make NAME the active one)",
      arg("--adapter", help="adapter to make active"),
      examples=["%lora on model", "%lora on model --adapter second"], mutates="model")
def _on(ctx, args):
    model = ctx.model(args.model)
    core.enable(model, args.adapter)
    active = core.find(model).active
    print(f"adapter `{active}` on")


@verb("off", "disable all adapters: outputs are exactly the base model's", examples=["%lora off model"],
      mutates="model")
def _off(ctx, args):
    core.disable(ctx.model(args.model))
    print("adapters off: outputs are the base model's")


@verb("delete", "remove one adapter", arg("--adapter", required=True, help="adapter to remove"),
      examples=["%lora delete model --adapter second"], mutates="model")
def _delete(ctx, args):
    core.delete_adapter(ctx.model(args.model), args.adapter)
    print(f"adapter `{args.adapter}` deleted")
