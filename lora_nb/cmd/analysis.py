"""Verbs that show how an adapter learned: ``history`` (spectra over the run), ``advise`` (ranks), ``intruders``."""

from __future__ import annotations

from ..core.analysis.learned.advisor import advise
from ..core.analysis.learned.history import rank_map, spectra_history, values_over_steps
from ..core.kinds import check_callable
from ..errors import OptionError
from ..frontend import pick
from ..widgets.ui import Report, report
from .router import UI, arg, verb


def _history_text(history) -> str:
    ranks = rank_map(history).ranks
    lines = [repr(history), f"{'module':<40} {'eff. rank':>20} {'σ₁':>22}"]
    for i, name in enumerate(history.modules):
        sigma = values_over_steps(history, name)[:, 0]
        lines.append(f"{name:<40} {ranks[i, 0]:>9.2f} → {ranks[i, -1]:<8.2f} {sigma[0]:>10.4g} → {sigma[-1]:<10.4g}")
    return "\n".join(lines)


@verb("history", "ΔW's spectra over the last run: rank per module × step, σ₁…σᵣ of a module over steps",
      arg("--module", help="module whose singular values are drawn (default: the first)"), UI,
      examples=["%lora history model", "%lora history model --module model.layers.0.self_attn.q_proj"],
      mutates="nothing")
def _history(ctx, args):
    model = ctx.model(args.model)
    history = spectra_history(model)
    module = args.module or history.modules[0]
    if module not in history.values:
        raise OptionError(f"no recorded spectra for `{module}`; modules: {', '.join(history.modules[:4])} …")
    mode = ctx.view_mode(args)
    return pick({"widget": _history_view, "text": _history_report}, mode)(model, history, module, mode)


def _history_view(model, history, module: str, mode: str):
    from ..widgets.history import HistoryView

    view = HistoryView.of(model)
    view.module.value = module
    return view


def _history_report(model, history, module: str, mode: str) -> Report:
    from ..viz.analysis import rank_map_spec, values_over_steps_spec

    specs = [rank_map_spec(rank_map(history)),
             values_over_steps_spec(history.steps, values_over_steps(history, module), module, history.modules)]
    return report(mode, _history_text(history), specs)


@verb("advise", "per module, the rank holding a share of ΔW's energy (`attach --rank-pattern advised` uses it); "
      "the capacity gauge: parameters per supervised token",
      arg("--energy", type=float, default=0.9, help="share of ‖ΔW‖²_F to keep (default: 0.9)"),
      arg("--adapter", help="adapter to advise on (default: the active one)"),
      arg("--layers", help="regex: only modules whose names it finds"), UI,
      examples=["%lora advise model", "%lora advise model --energy 0.95",
                "%lora attach model --name lean --rank-pattern advised"], mutates="nothing")
def _advise(ctx, args):
    advice = advise(ctx.model(args.model), args.energy, args.adapter, args.layers)
    from ..viz.analysis import advice_spec
    from ..viz.capacity import advice_capacity_spec

    specs = [advice_spec(advice)] + ([advice_capacity_spec(advice)] if advice.tokens else [])
    return Report(repr(advice), specs, advice._repr_html_(), charts=True)


@verb("intruders", "intruder dimensions per layer; with --metric, a slider that scales them (undoable)",
      arg("--metric", help="notebook variable: metric(model) -> float, or a dict of them {label: metric}"),
      arg("--adapter", help="adapter (default: the active one)"),
      arg("--top-k", type=int, default=10, help="top singular vectors of W+ΔW examined (default: 10)"),
      arg("--eps", type=float, default=0.5, help="best |cos| with W's below which a vector intrudes (default: 0.5)"),
      arg("--layers", help="regex: only modules whose names it finds"), UI,
      examples=["%lora intruders model", "%lora intruders model --metric losses"], mutates="nothing")
def _intruders(ctx, args):
    model = ctx.model(args.model)
    if args.metric is not None:
        slider = pick({"widget": _intruder_slider}, ctx.view_mode(args),
                      needs="%lora intruders --metric shows a slider and needs a widget front end (Jupyter); "
                            "here, use lora_nb.core.analysis.learned.intruders.IntruderDial(model).set(λ)")
        return slider(model, ctx.lookup(args.metric), args)
    from ..core.analysis.learned.spectra import intruders

    result = intruders(model, args.adapter, args.top_k, args.eps, args.layers)
    return Report(repr(result), [], result._repr_html_())


def _intruder_slider(model, metric, args):
    """The intruders view with its slider, scored by ``metric`` (a function, or a dict of them)."""
    from ..widgets.intruders import IntruderView

    for one in metric.values() if isinstance(metric, dict) else [metric]:
        check_callable(one, "--metric")
    return IntruderView(model, metric, args.adapter, args.top_k, args.eps, args.layers)
