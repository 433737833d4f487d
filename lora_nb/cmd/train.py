"""Verbs that train an adapter and control the run: ``train``, ``stop``, ``pause``, ``resume``."""

from __future__ import annotations

from ..core import registry
from ..core.training.reporting import ConsoleReporter, end_line
from ..core.training.settings import TrainSettings
from ..core.training.train import train
from ..errors import TrainingError
from ..frontend import COLAB_BACKGROUND_NOTE, say_once
from .data_options import DATA_OPTIONS, data_names, data_objects
from .router import UI, arg, options_of, verb, with_settings

_NOTEBOOK = {"device": "device"}  # train's options whose default is a notebook setting (`%config LoraMagics`)


@verb(
    "train", "train the active adapter with a live dashboard (background in a notebook; --wait blocks)",
    *DATA_OPTIONS,
    *options_of(TrainSettings, notebook=_NOTEBOOK),
    arg("--wait", action="store_true", help="block the cell until the run ends"),
    arg("--background", action="store_true", help="train in a background thread even outside a notebook"),
    UI,
    examples=["%lora train model --data texts --tokenizer tok --steps 200",
              "%lora train model --data loader --epochs 2 --lr 1e-4 --grad-accum 4 --wait",
              "%lora train model --data pairs --eval val_pairs --loss mse --eval-every 50",
              "%lora train model --data texts --tokenizer tok --steps 5000 --save-every 500 --save-dir ckpt",
              "%lora train model --data texts --tokenizer tok --steps 5000 --resume ckpt",
              "%lora train model --data texts --tokenizer tok --eval val --patience 3 --restore-best",
              "%lora train model --data texts --tokenizer tok --sample-prompts prompts --lr-ratio 16"],
    mutates="model",
)
def _train(ctx, args):
    model = ctx.model(args.model)
    names, objects = data_names(args), data_objects(ctx, args)
    settings = with_settings({f: getattr(args, f) for f in TrainSettings.__dataclass_fields__}, ctx.settings,
                             _NOTEBOOK)
    if args.sample_prompts:  # a variable holding the prompts (a list of str, or one str)
        settings["sample_prompts"] = ctx.lookup(args.sample_prompts)
    front = ctx.frontend  # Colab: in the cell's own thread unless --background (its updates may not show)
    background = ((front.background and ctx.settings.background) or args.background) and not args.wait
    say_once(COLAB_BACKGROUND_NOTE if background and front.name == "colab" else front.train_note)
    mode = ctx.view_mode(args)
    view = _view(ctx, mode, background)
    names = {key: name for key, name in names.items() if name}
    run = train(model, background=background, callbacks=[view], names=names, **objects, **settings)
    if background and not view.prints:
        ctx.display(view)  # from the cell's own thread, so every frontend gets it
    elif background:  # its first lines before the prompt's `Out[n]: TrainRun(…)`, not after it
        while not view.begun.wait(0.05) and not run.done:
            pass
    return run


def _view(ctx, mode: str, background: bool):
    """The live dashboard of this front end: widgets, a picture updated in place, or printed lines (text progress of
    a background run in a terminal prints its first and last lines only, so it never writes over the prompt the
    user types at)."""
    from ..widgets.live import LiveDashboard

    interval = 1 / ctx.refresh_rate  # the progress line; the curves also keep to their byte rate
    return LiveDashboard(show_on_begin=not background, interval=interval, chart_interval=max(0.5, interval),
                         ui=mode)


def mid_run_note(ctx, path: str) -> str:
    """``""`` unless a run trains the model at ``path``; else one line: what was read is the adapter at this step."""
    session = registry.find(ctx.model(path))
    if session is None or not session.training:
        return ""
    run = session.run
    return (f"note: `{path}` is still training (step {run.step}/{run.max_steps}): this is its adapter at that step; "
            f"`%lora train … --wait` holds the next cell until a run ends, `%lora stop {path}` ends it now")


def _active_run(ctx, path: str):
    session = registry.require(ctx.model(path))
    if not session.training:
        raise TrainingError(f"no training is running on `{path}`")
    return session.run


@verb("stop", "stop a running training at the next step boundary; trained weights are kept",
      examples=["%lora stop model"], mutates="run")
def _stop(ctx, args):
    session = registry.require(ctx.model(args.model))
    run = session.run
    if not session.training:  # nothing to do, nothing changed: say so (a script or a tour goes on)
        ended = f" (last run {end_line(run)})" if run is not None else ""
        print(f"no training is running on `{args.model}`{ended}")
        return
    run.stop()
    run.wait(timeout=30)
    if not run.done:
        print("stop requested; the run ends when the current step finishes")
    elif not any(isinstance(c, ConsoleReporter) or getattr(c, "prints", False) for c in run.callbacks):
        print(run.message)  # unless text progress printed the end already


@verb("pause", "pause a background training run at the next step boundary", examples=["%lora pause model"],
      mutates="run")
def _pause(ctx, args):
    run = _active_run(ctx, args.model)
    run.pause()
    run.wait_paused(timeout=30)  # the step in flight finishes first: the model holds still once this returns
    print(f"paused at step {run.step}/{run.max_steps}; `%lora resume {args.model}` goes on")


@verb("resume", "resume a paused training run", examples=["%lora resume model"], mutates="run")
def _resume(ctx, args):
    run = _active_run(ctx, args.model)
    run.resume()
    print(f"resumed at step {run.step}/{run.max_steps}")
