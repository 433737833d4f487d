"""Short training runs from the same start, on bare copies of the model's base weights: ``evaluation`` (``Bare``
copies, held-out loss and accuracy), ``hooks`` (the one callback protocol they all speak), ``runs`` (the kit the
sweeps repeat: one recipe, one run), ``sweep`` and ``lr_sweep`` (final loss against the learning rate),
``placement`` (attention only vs every linear layer at matched parameters), ``vs_full`` with ``vs_full_result``
(LoRA against full fine-tuning) and ``directions`` (the subspaces the two updates share), and ``progress`` (their
text lines outside a notebook). The model itself is never touched."""
