"""Watching the training loops people already run: ``transformers.Trainer`` and TRL's ``SFTTrainer``,
``DPOTrainer``, ``GRPOTrainer`` (Unsloth's trainers are TRL's).

``callback`` (``WatchCallback``: the trainer's run as a lora_nb ``TrainRun``), ``logs`` (a trainer's log → a history
record, per trainer family; its panels), ``adapter`` (which adapter the trainer trains, its session), ``supervised``
(the trainer's own batches: supervised tokens counted, the first batch's loss mask checked) and ``attach``
(``watch_trainer``: callback, counter and the ending of a failed run put on one trainer). Views live in
``lora_nb.widgets.watch``. Needs transformers only; TRL is optional.
"""
