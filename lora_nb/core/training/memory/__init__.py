"""Memory of a run: exact byte counts of trained state and measured peaks (``budget``), the plan a run prints
before its first step (``plan``), activations measured on real samples (``activations``, ``allocations``) or on a
CPU run's own first step (``first_step``), and gradient checkpointing, which trades them for recomputation
(``recompute``)."""
