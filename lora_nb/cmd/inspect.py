"""Verbs that look inside an adapter: ``weights``, ``spectrum``, ``similarity``.

Inside a Jupyter kernel they show interactive explorers (live while a run trains); in
terminal IPython and scripts they return a text table that also carries static figures.
"""

from __future__ import annotations

import html
import sys
from dataclasses import dataclass, field
from typing import Any

from ..core.analysis.spectra import similarity, spectra
from ..core.analysis.weights import matrices, weights
from .router import UI, arg, verb

_ADAPTER = arg("--adapter", help="adapter to inspect (default: the active one)")
_LAYERS = arg("--layers", help="regex: only modules whose names it finds")


@dataclass
class Report:
    """A text table (terminal) with the static figures of the same data (``.figures``)."""

    text: str
    figures: list[Any] = field(default_factory=list)
    html: str = ""

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.html or f"<pre>{html.escape(self.text)}</pre>"


def _text_progress(done: int, total: int, name: str) -> None:
    """One overwritten line on stderr while W / W+ΔW spectra are computed."""
    end = "\n" if done == total else ""
    print(f"\rW, W+ΔW spectra: {done}/{total} modules ({name})".ljust(100), end=end, file=sys.stderr, flush=True)


@verb("weights", "A, B and ΔW heatmaps and a layer × module norm map", _ADAPTER, _LAYERS, UI,
      examples=["%lora weights model", "%lora weights model --adapter second --layers 'layers\\.0\\.'"])
def _weights(ctx, args):
    model = ctx.model(args.model)
    if ctx.view_mode(args) == "widget":
        from ..widgets.explorers import WeightsExplorer

        return WeightsExplorer(model, args.adapter, args.layers)
    from ..viz.weights import histogram_figure, module_figures, norm_map_figure

    summary = weights(model, args.adapter, args.layers)
    mm = matrices(model, next(iter(summary)), summary.adapter)
    figures = [norm_map_figure(summary), *module_figures(mm).values(), histogram_figure(mm)]
    return Report(repr(summary), figures, summary._repr_html_())


@verb("spectrum", "singular values of ΔW per module; with --base, W and W+ΔW too", _ADAPTER, _LAYERS,
      arg("--base", action="store_true", help="also the spectra of W and W+ΔW (dense SVDs, cached)"), UI,
      examples=["%lora spectrum model", "%lora spectrum model --layers q_proj --base"])
def _spectrum(ctx, args):
    model = ctx.model(args.model)
    if ctx.view_mode(args) == "widget":
        from ..widgets.explorers import SpectrumExplorer

        return SpectrumExplorer(model, args.adapter, args.layers, base=args.base)
    from ..viz.spectra import base_spectrum_figure, effective_rank_figure, spectrum_figure

    result = spectra(model, args.adapter, base=args.base, layers=args.layers,
                     progress=_text_progress if args.base else None)
    first = next(iter(result))
    figures = [effective_rank_figure(result), spectrum_figure(result, first)]
    if args.base:
        figures.append(base_spectrum_figure(result, first))
    return Report(repr(result), figures, result._repr_html_())


@verb("similarity", "LoRA-paper subspace similarity φ(i, j) between two adapters",
      arg("--adapter", required=True, help="first adapter"),
      arg("--other", required=True, help="second adapter"), _LAYERS, UI,
      examples=["%lora similarity model --adapter r8 --other r64"])
def _similarity(ctx, args):
    model = ctx.model(args.model)
    if ctx.view_mode(args) == "widget":
        from ..widgets.explorers import SimilarityView

        return SimilarityView(model, args.adapter, args.other, args.layers)
    from ..viz.spectra import similarity_figure

    result = similarity(model, args.adapter, args.other, args.layers)
    return Report(repr(result), [similarity_figure(result, next(iter(result)))], result._repr_html_())
