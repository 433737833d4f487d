"""Verbs that look inside an adapter: ``weights``, ``spectrum``, ``similarity``.

``--ui widget`` (a Jupyter kernel's default) shows interactive explorers, live while a run trains;
``--ui static`` shows the table and SVG pictures; ``--ui text`` (terminal IPython, scripts) returns a
text table that also carries the figures (``.figures``).
"""

from __future__ import annotations

import sys

from ..core.analysis.learned.interference import interference
from ..core.analysis.learned.spectra import similarity, spectra
from ..core.analysis.learned.weights import matrices, weights
from ..errors import OptionError
from ..frontend import pick
from ..widgets.ui import Report, report
from .router import UI, arg, verb
from .train import mid_run_note

_ADAPTER = arg("--adapter", help="adapter to inspect (default: the active one)")
_LAYERS = arg("--layers", help="regex: only modules whose names it finds")


def _text_progress(done: int, total: int, name: str) -> None:
    """One overwritten line on stderr while W / W+ΔW spectra are computed."""
    end = "\n" if done == total else ""
    print(f"\rW, W+ΔW spectra: {done}/{total} modules ({name})".ljust(100), end=end, file=sys.stderr, flush=True)


@verb("weights", "A, B and ΔW heatmaps and a layer × module norm map", _ADAPTER, _LAYERS, UI,
      examples=["%lora weights model", "%lora weights model --adapter second --layers 'layers\\.0\\.'"],
      mutates="nothing")
def _weights(ctx, args):
    return pick({"widget": _weights_explorer, "text": _weights_report}, ctx.view_mode(args))(ctx, args)


def _weights_explorer(ctx, args):
    from ..widgets.explorers import WeightsExplorer

    return WeightsExplorer(ctx.model(args.model), args.adapter, args.layers)


def _weights_report(ctx, args) -> Report:
    model, mode = ctx.model(args.model), ctx.view_mode(args)
    from ..viz.weights import histogram_spec, module_specs, norm_map_spec

    summary = weights(model, args.adapter, args.layers)
    mm = matrices(model, next(iter(summary)), summary.adapter)
    specs = [norm_map_spec(summary), *module_specs(mm).values(), histogram_spec(mm)]
    return report(mode, repr(summary), specs, summary._repr_html_())


@verb("spectrum", "singular values of ΔW per module; with --base, W and W+ΔW too", _ADAPTER, _LAYERS,
      arg("--base", action="store_true", help="also the spectra of W and W+ΔW (dense SVDs, cached)"), UI,
      examples=["%lora spectrum model", "%lora spectrum model --layers q_proj --base"], mutates="nothing")
def _spectrum(ctx, args):
    return pick({"widget": _spectrum_explorer, "text": _spectrum_report}, ctx.view_mode(args))(ctx, args)


def _spectrum_explorer(ctx, args):
    from ..widgets.explorers import SpectrumExplorer

    return SpectrumExplorer(ctx.model(args.model), args.adapter, args.layers, base=args.base)


def _spectrum_report(ctx, args) -> Report:
    model, mode = ctx.model(args.model), ctx.view_mode(args)
    from ..viz.spectra import base_spectrum_spec, effective_rank_spec, spectrum_spec

    result = spectra(model, args.adapter, base=args.base, layers=args.layers,
                     progress=_text_progress if args.base else None)
    if note := mid_run_note(ctx, args.model):  # a picture taken while a run trains says at which step
        print(note)
    first = next(iter(result))
    specs = [effective_rank_spec(result), spectrum_spec(result, first)]
    if args.base:
        specs.append(base_spectrum_spec(result, first))
    return report(mode, repr(result), specs, result._repr_html_())


@verb("similarity", "subspace similarity φ(i, j) of two adapters, or the overlap map of two or more (--adapters)",
      arg("--adapter", help="first adapter"),
      arg("--other", help="second adapter"),
      arg("--adapters", help="two or more adapters, comma-separated: per module cos(ΔWᵢ, ΔWⱼ) and mean φ"), _LAYERS, UI,
      examples=["%lora similarity model --adapter r8 --other r64", "%lora similarity model --adapters a,b,c"],
      mutates="nothing")
def _similarity(ctx, args):
    model = ctx.model(args.model)
    mode = ctx.view_mode(args)
    if args.adapters:
        if args.adapter or args.other:
            raise OptionError("%lora similarity: give --adapters a,b,… or --adapter A --other B, not both")
        from ..viz.analysis import interference_spec

        result = interference(model, args.adapters, args.layers)
        return report(mode, repr(result), [interference_spec(result)], result._repr_html_())
    if not (args.adapter and args.other):
        raise OptionError("%lora similarity: give --adapter A --other B, or --adapters a,b,…")
    return pick({"widget": _similarity_view, "text": _similarity_report}, mode)(model, args, mode)


def _similarity_view(model, args, mode: str):
    from ..widgets.explorers import SimilarityView

    return SimilarityView(model, args.adapter, args.other, args.layers)


def _similarity_report(model, args, mode: str) -> Report:
    from ..viz.spectra import similarity_spec

    result = similarity(model, args.adapter, args.other, args.layers)
    return report(mode, repr(result), [similarity_spec(result, next(iter(result)))], result._repr_html_())
