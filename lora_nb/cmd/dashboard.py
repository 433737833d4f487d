"""``dashboard``: one widget for a model (status, adapters, training, weights, spectrum)."""

from __future__ import annotations

from ..core.adapters.status import status
from ..frontend import pick
from .router import UI, Text, verb


@verb("dashboard", "one widget for a model: status, adapters, training, weights and spectrum in tabs", UI,
      examples=["%lora dashboard model"], mutates="nothing")
def _dashboard(ctx, args):
    return pick({"widget": _widget, "text": _text}, ctx.view_mode(args))(ctx, args)


def _widget(ctx, args):
    from ..widgets.dashboard import ModelDashboard

    return ModelDashboard(ctx.model(args.model), lookup=ctx.lookup, name=args.model).widget


def _text(ctx, args) -> Text:
    model = ctx.model(args.model)
    from ..core import registry

    head = str(status(model)) if registry.find(model) is not None else f"`{args.model}` has no LoRA adapter yet"
    return Text(f"{head}\n(the dashboard is a widget and needs a widget front end (JupyterLab, Notebook 7, "
                "VS Code); here, use the other %lora verbs)")
