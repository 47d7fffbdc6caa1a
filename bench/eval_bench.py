"""The batched evaluation runner against a per-sample generate loop, same model, same samples.

    python bench/eval_bench.py [--model tiny:qwen2_5_vl-tiny] [--cases 4] [--batch-size 16]
                               [--max-new-tokens 32] [--repeats 2]

Writes ``--cases`` chest and fundus phantom cases (every answer type, 2D), then times, in one
run and one process, on the same loaded model:

(a) the peer: a loop that asks one sample at a time (``MedVLM.answer``, one ``generate`` call
    per question, as MedEvalKit's and VLMEvalKit's default loops do), scoring each answer;
(b) medvl's runner, `medvl.eval.runner.evaluate`: ``--batch-size`` questions per ``generate``
    call, scored and written as prediction lines.

Greedy decoding on both sides; the script checks that they gave the same answers (batched
decoding pads, which can flip a near-tie: the count of differing answers is printed). Prints
each side's median wall time over ``--repeats`` (after one warm-up of each), samples per
second and the ratio (b) / (a) in throughput. Target: >= 3x.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny:qwen2_5_vl-tiny")
    parser.add_argument("--cases", type=int, default=4, help="phantom cases per modality")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    import torch

    from medvl.data import read_manifest, write_manifest
    from medvl.data.phantom_samples import generate_phantom_dataset
    from medvl.eval.predictions import read_predictions
    from medvl.eval.runner import EvalConfig, evaluate, load_eval_model
    from medvl.eval.scoring import score
    from medvl.model.inputs import Question

    with tempfile.TemporaryDirectory() as tmp:
        manifest = generate_phantom_dataset(
            Path(tmp) / "data", n=args.cases, modalities=("chest", "fundus"), progress=False
        )
        # Grounding questions aside: a box head answers them in one pass either way.
        samples = [s for s in read_manifest(manifest) if s.answer_type != "grounding"]
        root = manifest.parent
        answers = write_manifest(root / "answers.jsonl", samples)
        config = EvalConfig(model=args.model, manifest=str(answers), batch_size=args.batch_size,
                            max_new_tokens=args.max_new_tokens, progress=False, reasoning=False,
                            reasoning_matcher="none")  # fmt: skip
        model = load_eval_model(config)

        def loop() -> dict[str, str | None]:
            out = {}
            for s in samples:
                q = Question(s.image_paths(root)[0], s.question, s.options, s.answer_type,
                             s.modality, s.anatomy)  # fmt: skip
                answer = model.answer(q, max_new_tokens=args.max_new_tokens, reasoning=False)
                score(s, answer, root)
                out[s.id] = answer.answer
            return out

        def runner(k: int) -> dict[str, str | None]:
            path = Path(tmp) / f"run{k}.jsonl"
            evaluate(dataclasses.replace(config, output=str(path)), model=model)
            return {r["id"]: r["answer"] for r in read_predictions(path)}

        loop()  # warm-up
        runner(0)
        loop_times, run_times = [], []
        for k in range(1, args.repeats + 1):
            start = time.perf_counter()
            plain = loop()
            loop_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            batched = runner(k)
            run_times.append(time.perf_counter() - start)
    n = len(samples)
    a, b = statistics.median(loop_times), statistics.median(run_times)
    differ = sum(plain[i] != batched.get(i) for i in plain)
    print(f"{n} questions, {args.model}, {args.max_new_tokens} new tokens, greedy, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(f"(a) per-sample loop   {a:7.2f} s  {n / a:6.2f} samples/s")
    print(f"(b) medvl runner, batch {args.batch_size}  {b:7.2f} s  {n / b:6.2f} samples/s")
    print(f"ratio (b)/(a) throughput: {a / b:.2f}x (target >= 3x); answers that differ: {differ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
