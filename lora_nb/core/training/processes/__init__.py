"""Training outside the kernel's one thread: N data-parallel processes forked from the notebook (``driver``), what
each process runs (``worker``), and a run exported as a script for ``accelerate launch`` (``export``, from
``script_template``)."""
