"""Does SFT teach a small model to read a chest phantom? The proof table, at a difficulty level.

    python bench/learning.py [--difficulty easiest|easy|realistic] [--n 400] [--n-test 100]
                             [--types closed] [--question nodule] [--steps 600]
                             [--model tiny:qwen2_5_vl-tiny]

Writes ``--n`` training and ``--n-test`` held-out chest phantoms (different seeds) at the
difficulty (`medvl.scans.phantoms.chest.DIFFICULTIES`), keeps the samples of ``--types`` (and,
with ``--question``, only closed questions whose text holds that word), fine-tunes with medvl's
SFT (answer only, lr 1e-3, 20 warm-up steps, cosine, batch 4), then answers the held-out samples
twice with medvl's evaluator: with their own scans and with swapped scans
(`medvl.eval.ablations.swap_scans`). Prints `medvl.eval.learning.learning_table`: per answer
type the accuracy with its Wilson 95% CI, chance, the training prior, the swapped-scan accuracy
and McNemar's test of own against swapped. Results so far: docs/learning.md, section 2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from medvl.data.dataset import DatasetConfig
from medvl.data.manifest import read_manifest, write_manifest
from medvl.data.phantom_samples import phantom_samples
from medvl.data.sample import Sample
from medvl.eval.ablations import swap_scans
from medvl.eval.learning import learning_table
from medvl.eval.runner import EvalConfig, evaluate, read_predictions
from medvl.scans.phantoms import case_seed
from medvl.scans.phantoms.chest import DIFFICULTIES, make_chest_case
from medvl.scans.phantoms.writers import write_case
from medvl.train.sft import SFTConfig, SFTTrainer


def _samples(folder: Path, n: int, set_seed: int, args, split: str) -> list[Sample]:
    def cases():
        for i in range(n):
            case = make_chest_case(case_seed(set_seed, i), args.difficulty)
            write_case(case, folder)
            yield case

    kept = []
    for s in phantom_samples(cases()):
        if s.answer_type not in args.types:
            continue
        if args.question and s.answer_type == "closed" and args.question not in s.question:
            continue
        kept.append(Sample.from_dict(s.to_dict() | {"split": split}))
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", default="easiest", choices=list(DIFFICULTIES))
    parser.add_argument("--n", type=int, default=400, help="training cases")
    parser.add_argument("--n-test", type=int, default=100, help="held-out cases")
    parser.add_argument("--types", nargs="+", default=["closed"],
                        choices=["closed", "choice", "severity"])  # fmt: skip
    parser.add_argument("--question", default="nodule",
                        help="keep only closed questions containing this word ('' keeps all)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--model", default="tiny:qwen2_5_vl-tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        data = root / "data"
        train = _samples(data, args.n, 2 * args.seed + 1, args, "train")
        test = _samples(data, args.n_test, 2 * args.seed + 2, args, "test")
        manifests = {
            "train": write_manifest(data / "train.jsonl", train),
            "own": write_manifest(data / "test.jsonl", test),
            "swapped": write_manifest(data / "swapped.jsonl", swap_scans(test, args.seed)),
        }
        config = SFTConfig(
            model=args.model, train_manifest=str(manifests["train"]),
            output_dir=str(root / "sft"), lr=args.lr, warmup_steps=20, max_steps=args.steps,
            batch_size=4, save_every=None, report_to="none", reasoning=False, seed=args.seed,
            log_every=50, dataset=DatasetConfig(cache="memory"),
        )  # fmt: skip
        trainer = SFTTrainer(config)
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model).eval()
        rows = {}
        for name in ("own", "swapped"):
            out = evaluate(
                EvalConfig(
                    model=str(root / "sft" / "final"), manifest=str(manifests[name]),
                    output=str(root / f"predictions_{name}.jsonl"), model_name=name,
                    reasoning=False, max_new_tokens=16, batch_size=8, seed=args.seed,
                ),  # fmt: skip
                model=model,
            )
            rows[name] = read_predictions(out)
        table = learning_table(rows["own"], rows["swapped"], read_manifest(manifests["train"]),
                               test, seed=args.seed)  # fmt: skip
    print(f"\nchest phantoms, difficulty {args.difficulty}, {args.model}, {args.steps} steps, "
          f"{len(train)} training / {len(test)} held-out samples, "
          f"{time.perf_counter() - start:.0f} s\n")  # fmt: skip
    print(table.to_markdown())
    return 0 if all(r.beats_bar for r in table.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
