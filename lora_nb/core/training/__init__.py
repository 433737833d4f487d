"""Training a LoRA adapter. The run core sits here: ``train`` (the entry point), ``run`` (``TrainRun`` and
``prepare_run``), ``loop`` (steps and every way a run ends), ``settings``, ``callbacks``, ``device``, ``optimizer`` and
``reporting`` (text progress), with what every run shares: ``lifecycle`` (begin → steps → end, the hooks emitted
from one place), ``precision`` (autocast and loss scaling), ``undo`` (the records a failed step's undo takes back),
``rng`` (the random generators a checkpoint keeps), ``concurrent`` (two runs in one kernel) and ``capacity``
(trainable parameters against supervised tokens). Concepts
with several modules have their own package: ``data``, ``memory``, ``longrun`` (checkpoints, resume, early
stopping, samples, spectra over a run) and ``processes`` (multi-process runs and script export)."""
