"""Do the tiny builds see what and where? Presence and quadrant tasks, per family.

    python bench/sees.py [--families qwen2_vl qwen2_5_vl qwen3_vl] [--sizes small]
                         [--tasks presence quadrant] [--steps 600] [--presence-steps 50]

Each row is one `medvl.experiments.run_seeing`: 160 training and 40 held-out 112x112 pictures
(`medvl.data.seeing`), medvl's SFT (answer only, lr 1e-3, batch 4), then medvl's evaluator on
the held-out pictures and on the same questions with swapped pictures. It prints held-out
accuracy with its Wilson 95% CI, chance and the swapped-picture accuracy. Target: quadrant
>= 0.90 held-out for every family within 600 steps, swapped pictures at chance (docs/learning.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from medvl.experiments import run_seeing
from medvl.model.families import FAMILIES


def _ci(interval) -> str:
    return f"{interval.estimate:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--sizes", nargs="+", default=["small"], choices=["tiny", "small"])
    parser.add_argument("--tasks", nargs="+", default=["presence", "quadrant"],
                        choices=["presence", "quadrant"])  # fmt: skip
    parser.add_argument("--steps", type=int, default=600, help="SFT steps for quadrant")
    parser.add_argument("--presence-steps", type=int, default=50, help="SFT steps for presence")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp)")
    args = parser.parse_args(argv)

    header = ("| task | model | steps | held-out acc. (95% CI) | chance | swapped (95% CI) "
              "| sees | seconds |")  # fmt: skip
    print(header)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        for size in args.sizes:
            for family in args.families:
                for task in args.tasks:
                    steps = args.steps if task == "quadrant" else args.presence_steps
                    r = run_seeing(root / f"{task}-{family}-{size}", task, family=family,
                                   size=size, steps=steps, seed=args.seed)  # fmt: skip
                    print(f"| {task} | {r.model} | {steps} | {_ci(r.accuracy)} | {r.chance:.2f} "
                          f"| {_ci(r.swapped)} | {'yes' if r.sees else 'no'} "
                          f"| {r.seconds:.0f} |", flush=True)  # fmt: skip
                    failed |= task == "quadrant" and r.accuracy.estimate < 0.9
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
