"""The command line shared by the benchmarks that sweep data-set sizes against exact answers
(log_prob_calibration.py, reweight_vs_exact.py): parse --sizes / --datasets / --samples, run, print the
table, and keep the rows and the table in benchmarks/results/."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch


def sweep_main(description: str, run: Callable[[list[int], int, int], list[dict]],
               summarise: Callable[[list[dict]], str], results: Path, *, sizes: list[int], datasets: int,
               samples: int) -> None:
    """``run(sizes, datasets, samples)`` with the command line's values (defaults as given), its
    ``summarise``d table printed and written with the rows and arguments to ``results`` (JSON)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)
    parser.add_argument("--datasets", type=int, default=datasets)
    parser.add_argument("--samples", type=int, default=samples)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = run(args.sizes, args.datasets, args.samples)
    table = summarise(rows)
    print(table)
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps({"args": vars(args), "rows": rows, "table": table}, indent=1))
