"""Benchmark: how long Tab takes on a ``%lora`` line, next to ordinary Python completions, in one shell.

A terminal-like IPython shell with lora_nb loaded and a crowded namespace (``--models`` tiny MLPs, as many
lists and tensors); each text is completed ``--repeat`` times through ``Completer.completions`` (what a
notebook frontend calls) after one warm-up, and the mean time per Tab is printed. ``%lora`` lines silence
the other completers (Jedi included), so they should cost a fraction of a plain-name completion.

    python benchmarks/completion.py [--models 100] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import torch
from IPython.core.completer import provisionalcompleter
from IPython.core.interactiveshell import InteractiveShell
from torch import nn

TEXTS = ["%lora train model0 --data ", "%lora attach ", "%lora on model0 --adapter ", "%lora train model0 --",
         "data1", "model0.fo"]


def mean_ms(shell, text: str, repeat: int) -> tuple[float, int]:
    """Mean milliseconds per completion of ``text`` (cursor at its end), and how many completions it gave."""
    with provisionalcompleter():
        list(shell.Completer.completions(text, len(text)))
        start = time.perf_counter()
        for _ in range(repeat):
            found = list(shell.Completer.completions(text, len(text)))
    return (time.perf_counter() - start) / repeat * 1e3, len(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    options = parser.parse_args()
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lora_nb")
    for i in range(options.models):
        shell.user_ns.update({f"model{i}": nn.Sequential(nn.Linear(4, 4)), f"data{i}": [1, 2],
                              f"t{i}": torch.zeros(2)})
    shell.run_line_magic("lora", "attach model0 --targets 0 --r 2")
    print(f"{3 * options.models} variables; mean of {options.repeat} completions each")
    for text in TEXTS:
        ms, count = mean_ms(shell, text, options.repeat)
        print(f"  {text!r:32} {ms:8.2f} ms  {count:4d} completions")


if __name__ == "__main__":
    main()
