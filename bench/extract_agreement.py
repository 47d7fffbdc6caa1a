"""How often medvl's answer scoring agrees with a careful reader, on replies judged by hand.

    python bench/extract_agreement.py [--show]

Scores every case of ``tests/extraction_cases.py`` (reply, reference, answer type, verdict,
question, options: the forms medical VLMs write, hedges and refusals among them) with
`medvl.eval.metrics.answer_correct` and prints the share that agrees with the verdict, overall
and per answer type, then each disagreement (``--show`` lists every case). Results: README,
"Evaluation".
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from extraction_cases import CASES  # noqa: E402

from medvl.eval.metrics import answer_correct  # noqa: E402


def agreement() -> tuple[float, dict[str, tuple[int, int]], list[tuple]]:
    """(overall agreement, {answer type: (agreeing, cases)}, disagreements)."""
    per_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    misses = []
    for reply, reference, kind, verdict, question, options in CASES:
        scored = bool(answer_correct(reply, reference, kind, options, question))
        per_type[kind][1] += 1
        if scored == verdict:
            per_type[kind][0] += 1
        else:
            misses.append((kind, reply, reference, question, verdict))
    total = sum(n for _, n in per_type.values())
    return (len(CASES) - len(misses)) / total, {k: tuple(v) for k, v in per_type.items()}, misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="list every case")
    args = parser.parse_args(argv)
    rate, per_type, misses = agreement()
    print(f"answer_correct agrees with the judged verdict on {rate:.1%} of {len(CASES)} cases")
    for kind, (ok, n) in sorted(per_type.items()):
        print(f"  {kind:9s} {ok}/{n}")
    for kind, reply, reference, question, verdict in misses:
        judged = "right" if verdict else "wrong"
        print(
            f"  disagrees ({kind}): {reply!r} vs {reference!r} (judged {judged}"
            f"{', asked ' + repr(question) if question else ''})"
        )
    if args.show:
        for case in CASES:
            print(case)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
