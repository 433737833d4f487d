"""Training a LoRA adapter. The run core sits here: ``train`` (the entry point), ``run`` (``TrainRun`` and
``prepare_run``), ``loop`` (steps and every way a run ends), ``settings``, ``callbacks``, ``device``, ``optimizer`` and
``reporting`` (text progress). Concepts with several modules have their own package: ``data``, ``memory``,
``longrun`` (checkpoints, resume, early stopping, samples, spectra over a run) and ``processes`` (multi-process
runs and script export)."""
