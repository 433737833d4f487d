"""Verbs for several adapters: ``toggle``, ``compare``, ``merge``, ``unmerge``, ``save``, ``load``, ``combine``."""

from __future__ import annotations

from ..core.adapters.combine import TYPES, combination_error, combine
from ..core.adapters.io import load, save
from ..core.adapters.merge import merge, unmerge
from ..core.analysis.outputs.compare import compare
from ..core.registry import require
from ..errors import OptionError
from ..frontend import pick
from .router import UI, Text, arg, verb
from .train import mid_run_note


@verb("toggle", "a panel: one toggle per adapter, active adapter, strength slider, merge state",
      UI, examples=["%lora toggle model"], mutates="nothing")
def _toggle(ctx, args):
    return pick({"widget": _panel, "text": _text_panel}, ctx.view_mode(args))(ctx.model(args.model))


def _panel(model):
    from ..widgets.toggle import AdapterPanel

    return AdapterPanel(model).widget


def _text_panel(model) -> Text:
    from ..widgets.toggle import text_panel

    return Text(text_panel(model))


@verb("compare", "outputs with the active adapter on vs off, side by side",
      arg("--prompt", action="append", help="text to continue (causal / seq2seq LMs); repeat it for a table"),
      arg("--prompts", help="notebook variable holding a list of prompts (one table row each)"),
      arg("--tokenizer", help="notebook variable holding the tokenizer for --prompt"),
      arg("--chat", action="store_true", help="send each prompt as a user turn through the chat template"),
      arg("--temperature", type=float, default=0.0, help="sample at this temperature (default: 0 = greedy)"),
      arg("--top-p", type=float, default=1.0, help="nucleus sampling: keep this much probability (default: 1)"),
      arg("--seed", type=int, help="seed for sampling: the same sample every time, adapter on and off"),
      arg("--inputs", help="notebook variable holding model inputs (a tensor or a dict of tensors)"),
      arg("--max-new-tokens", type=int, default=20, help="tokens to generate (default: 20)"),
      arg("--top-k", type=int, default=3, help="classes shown per example for classifiers (default: 3)"),
      UI,
      examples=["%lora compare gpt --prompt 'Once upon a time' --tokenizer tok",
                "%lora compare chat --prompt 'Hi!' --prompt 'Why is the sky blue?' --tokenizer tok --chat",
                "%lora compare chat --prompts questions --tokenizer tok --chat --temperature 0.7 --seed 0",
                "%lora compare clf --inputs batch"], mutates="model")
def _compare(ctx, args):
    model = ctx.model(args.model)
    prompt = _prompts(ctx, args)
    if (prompt is None) == (args.inputs is None):
        raise OptionError("%lora compare: give either --prompt TEXT (with --tokenizer VAR) or --inputs VAR")
    tokenizer = ctx.lookup(args.tokenizer, "tokenizer") if args.tokenizer else None
    inputs = ctx.lookup(args.inputs) if args.inputs else None
    return compare(model, prompt=prompt, tokenizer=tokenizer, inputs=inputs, max_new_tokens=args.max_new_tokens,
                   top_k=args.top_k, chat=args.chat, temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def _prompts(ctx, args) -> str | list[str] | None:
    """One ``--prompt``: that text; several, or ``--prompts VAR``: a list (a table)."""
    if args.prompts is not None and args.prompt:
        raise OptionError("%lora compare: give --prompt TEXT (repeatable) or --prompts VAR, not both")
    if args.prompts is not None:
        value = ctx.lookup(args.prompts)
        return [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else value
    if args.prompt:
        return args.prompt[0] if len(args.prompt) == 1 else args.prompt
    return None


@verb("merge", "merge the active adapter into the base weights (exact copy kept for unmerge)",
      arg("--adapter", help="adapter to merge (default: the active one); it becomes active"),
      examples=["%lora merge model", "%lora merge model --adapter second"], mutates="model")
def _merge(ctx, args):
    name = merge(ctx.model(args.model), args.adapter)
    return Text(f"adapter `{name}` merged into the base weights; `%lora unmerge {args.model}` restores them exactly")


@verb("unmerge", "take merged adapters out of the base weights, restoring them exactly",
      examples=["%lora unmerge model"], mutates="model")
def _unmerge(ctx, args):
    unmerge(ctx.model(args.model))
    return Text("base weights restored; the adapter runs unmerged again")


@verb("save", "save an adapter in PEFT format (adapter_config.json + adapter_model.safetensors)",
      arg("path", help="folder to write"),
      arg("--adapter", help="adapter to save (default: the active one)"),
      arg("--overwrite", action="store_true", help="replace the adapter saved in PATH (atomically)"),
      examples=["%lora save model ./my_adapter", "%lora save model ./second --adapter second",
                "%lora save model ./my_adapter --overwrite"], mutates="nothing")
def _save(ctx, args):
    model = ctx.model(args.model)
    name = args.adapter or require(model).active
    folder = save(model, args.path, adapter=args.adapter, overwrite=args.overwrite)
    note = mid_run_note(ctx, args.model)  # a save while a run trains says at which step
    return Text(f"adapter `{name}` saved to {folder} (loads with peft.PeftModel.from_pretrained too)"
                + (f"\n{note}" if note else ""))


@verb("load", "load a PEFT-format adapter, verified before the model is touched",
      arg("path", help="folder holding adapter_config.json and adapter_model.safetensors"),
      arg("--name", help="name for the loaded adapter (default: default)"),
      arg("--allow-pickle", action="store_true",
          help="accept adapter_model.bin (read with torch.load(weights_only=True)); only for trusted files"),
      arg("--frozen", action="store_true", help="load for inference only (adapter not trainable)"),
      examples=["%lora load model ./my_adapter", "%lora load model ./other --name other"], mutates="model")
def _load(ctx, args):
    name = load(ctx.model(args.model), args.path, name=args.name, allow_pickle=args.allow_pickle,
                trainable=not args.frozen)
    return Text(f"adapter `{name}` loaded from {args.path} and active")


@verb("combine", "a new adapter as a weighted combination of adapters (peft's add_weighted_adapter)",
      arg("--adapters", required=True, help="comma-separated adapter names"),
      arg("--weights", required=True, help="comma-separated weights, one per adapter"),
      arg("--name", default="mix", help="name of the new adapter (default: mix)"),
      arg("--type", default="svd", help=f"combination type: {', '.join(TYPES)} (default: svd)"),
      examples=["%lora combine model --adapters a,b --weights 0.7,0.3 --name mix",
                "%lora combine model --adapters a,b --weights 1,1 --type cat"], mutates="model")
def _combine(ctx, args):
    model = ctx.model(args.model)
    name = combine(model, args.adapters, args.weights, name=args.name, combination_type=args.type)
    errors = list(combination_error(model, name).values())
    exact = (f"exact (relative error ≤ {max(errors):.1e}, rounding)" if max(errors, default=0.0) < 1e-5 else
             f"relative error ‖ΔW − Σ wᵢΔWᵢ‖/‖Σ wᵢΔWᵢ‖ per module: mean {sum(errors) / len(errors):.3g}, "
             f"max {max(errors):.3g}")
    return Text(f"adapter `{name}` = {args.weights} · [{args.adapters}] ({args.type}); now active\n{exact}")
