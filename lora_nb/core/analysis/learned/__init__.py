"""What the adapter learned, read from its factors without dense products where the low-rank path is exact:
``weights`` (norm maps, A / B / ΔW matrices), ``spectra`` (singular values of ΔW, subspace similarity,
amplification), ``intruders`` (intruder dimensions and the dial that scales them), ``interference`` (how adapters
overlap before combining), ``history`` (ΔW's spectra over a run) and ``advisor`` (the rank that holds a share of
the update)."""
