"""Does SFT teach a small model to read a chest phantom? The proof table, at a difficulty level.

    python bench/learning.py [--difficulty easiest|easy|realistic] [--n 800] [--n-test 100]
                             [--types closed] [--question nodule] [--steps 1200]
                             [--model tiny:qwen2_5_vl-tiny] [--reasoning]

`medvl.experiments.run_phantom_reading`: ``--n`` training and ``--n-test`` held-out chest
phantoms (different seeds) at the difficulty (`medvl.scans.phantoms.chest.DIFFICULTIES`), the
samples of ``--types`` (with ``--question``, only closed questions whose text holds that word),
medvl's SFT (answer only, lr 1e-3, 20 warm-up steps, cosine, batch 4), then medvl's evaluator on
the held-out samples with their own scans and with swapped scans. Prints the learning table: per
answer type the accuracy with its Wilson 95% CI, chance, the training prior, the swapped-scan
accuracy and McNemar's test of own against swapped. Exit status 1 when a type's CI does not
clear chance and the prior. Results: docs/learning.md, section 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from medvl.experiments import run_phantom_reading
from medvl.scans.phantoms.chest import DIFFICULTIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", default="easiest", choices=list(DIFFICULTIES))
    parser.add_argument("--n", type=int, default=800, help="training cases")
    parser.add_argument("--n-test", type=int, default=100, help="held-out cases")
    parser.add_argument("--types", nargs="+", default=["closed"],
                        choices=["closed", "choice", "severity", "grounding"])  # fmt: skip
    parser.add_argument("--question", default="nodule",
                        help="keep only questions containing this word ('' keeps all)")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="tiny:qwen2_5_vl-tiny")
    parser.add_argument("--reasoning", action="store_true",
                        help="train and answer with <think> reasoning first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        table = run_phantom_reading(
            (args.out or Path(tmp)) / "run", args.difficulty, args.n, args.n_test, args.types,
            args.question, args.model, args.steps, args.lr, args.seed, progress=True,
            reasoning=args.reasoning,
        )  # fmt: skip
    print(f"\nchest phantoms, difficulty {args.difficulty}, {args.model}, {args.steps} steps, "
          f"{table.n} held-out samples, {time.perf_counter() - start:.0f} s\n")  # fmt: skip
    print(table.to_markdown())
    return 0 if all(r.beats_bar for r in table.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
