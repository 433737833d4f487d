"""What a run adds for long runs, as callbacks (``additions`` builds them): checkpoints on disk
(``checkpoint_files``) written and resumed exactly (``resume``), the best evaluation and early stopping
(``early_stop``), samples while training (``samples``) and ΔW's spectra over the run (``spectra_history``)."""
