"""The ``medvl`` command line: wiring only, the work happens in the library.

Every command has ``--help``. Commands:

    medvl info SCAN                  what a scan is (shape, spacing, orientation, modality, range)
    medvl data validate MANIFEST     check a JSONL manifest, all errors at once
    medvl data convert --format F SRC --out M   a public dataset folder -> manifest
    medvl data phantoms --out DIR    synthetic scans with known lesions, and their manifest
    medvl tiny build                 build a tiny offline Qwen-VL model into the cache
    medvl sft --config FILE          supervised fine-tuning (config keys overridable: --lr 1e-5)
    medvl grpo --config FILE         GRPO with verifiable medical rewards
    medvl eval --config FILE         score a model on a manifest (resumable predictions JSONL)
    medvl report PRED... --out DIR   report with CIs, paired comparisons, plots, worst cases
    medvl compare RUN_A RUN_B        two runs on their common samples, paired statistics
    medvl quickstart                 real scans, then phantoms -> SFT -> GRPO -> evaluation
    medvl demo [--model DIR]         the Gradio demo on a checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _cmd_info(args: argparse.Namespace) -> int:
    from medvl.scans.summary import scan_summary

    summary = scan_summary(args.scan, modality=args.modality)  # a ScanError: main tells it
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(len(k) for k in summary)
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from medvl.data import validate_manifest

    report = validate_manifest(args.manifest, check_files=not args.no_check_files)
    print(report.summary())
    return 0 if report.ok else 1


def _phantom_kinds(text: str) -> list[str]:
    """``--kinds``: a bad kind is a usage error, told before anything is written."""
    from medvl.scans.phantoms import check_kinds

    kinds = [k.strip() for k in text.split(",") if k.strip()]
    try:
        check_kinds(kinds)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return kinds


def _cmd_data_phantoms(args: argparse.Namespace) -> int:
    from medvl.data.phantom_samples import generate_phantom_dataset

    manifest = generate_phantom_dataset(args.out, n=args.n, seed=args.seed, modalities=args.kinds)
    print(manifest)
    return 0


def _parse_options(pairs: list[str]) -> dict:
    """``["access=[open]", "version=2"]`` -> ``{"access": ["open"], "version": 2}`` (YAML)."""
    import yaml

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects KEY=VALUE, got {pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


def _cmd_data_convert(args: argparse.Namespace) -> int:
    from medvl.data.adapters import convert_dataset

    report = convert_dataset(  # an AdapterError: main tells it
        args.format, args.src, args.out, split=args.split, **_parse_options(args.option)
    )
    print(report.summary())
    if report.written == 0:
        print(f"error: no sample written from {args.src} (see the reasons above)", file=sys.stderr)
        return 1
    return 0


def _cmd_tiny_build(args: argparse.Namespace) -> int:
    from medvl.model.tiny import build_tiny_model

    path = build_tiny_model(
        family=args.family, size=args.size, cache_dir=args.cache_dir, seed=args.seed,
        force=args.force,
    )
    print(path)
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from medvl.quickstart import FAST, run_quickstart

    steps = {"sft_steps": args.sft_steps, "grpo_steps": args.grpo_steps}
    run_quickstart(
        family=args.family, size=args.size, n_frames=args.frames,
        max_new_tokens=args.max_new_tokens, model_path=args.model, out_dir=args.out,
        **(steps | FAST if args.fast else steps),
    )  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from medvl.demo.app import main as launch_demo
    except ImportError as err:  # gradio is an extra
        print(f"medvl demo: {err.name or err} is not installed; install the demo extra: "
              "pip install -e '.[demo]'", file=sys.stderr)  # fmt: skip
        return 2
    if args.model and not Path(args.model).expanduser().exists() and ":" not in args.model:
        print(f"medvl demo: --model {args.model}: no such folder (give a checkpoint folder, "
              "e.g. an SFT or GRPO output's final/, or tiny:<family>-<size>)",
              file=sys.stderr)  # fmt: skip
        return 2
    launch_demo(args.model, host=args.host, port=args.port, share=args.share,
                max_file_size=args.max_file_size, timeout=args.timeout)  # fmt: skip
    return 0


def _config_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--key value`` overrides after ``--config``, with ``--resume [CHECKPOINT]``."""
    overrides = list(args.overrides)
    resume = getattr(args, "resume", None)
    if resume is not None:
        overrides += ["--resume_from", resume]
    return overrides


def _cmd_config_run(args: argparse.Namespace) -> int:
    """``medvl sft|grpo|eval --config FILE [--key value ...]``: the library's ``run_*``."""
    import importlib

    module, name = args.runner
    run = getattr(importlib.import_module(module), name)
    result = run(args.config, _config_overrides(args))  # a ConfigError: main tells it
    if args.print_result:
        print(result)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from medvl.eval.predictions import PredictionFileError
    from medvl.eval.report import make_report

    try:
        report = make_report(args.predictions, args.out, names=args.names,
                             gallery=args.gallery, image_root=args.image_root)  # fmt: skip
    except (PredictionFileError, FileNotFoundError, ValueError) as err:
        print(f"medvl report: error: {err}", file=sys.stderr)
        return 2
    print(report.with_name("report.html"))
    print(report)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from medvl.eval.compare import compare_runs
    from medvl.eval.predictions import PredictionFileError

    try:
        print(compare_runs(args.run_a, args.run_b, names=args.names))
    except (PredictionFileError, FileNotFoundError, ValueError) as err:
        print(f"medvl compare: error: {err}", file=sys.stderr)
        return 2
    return 0


def _config_command(
    commands: argparse._SubParsersAction, name: str, help: str, runner: tuple[str, str],
    description: str, *, example: str, resume: bool = False, print_result: bool = True,
) -> None:
    """A ``medvl <name> --config FILE [--key value ...]`` command that calls ``runner``."""
    command = commands.add_parser(name, help=help, description=description)
    command.add_argument("--config", required=True, help=f"a YAML config, e.g. {example}")
    if resume:
        command.add_argument(
            "--resume", nargs="?", const="latest", metavar="CHECKPOINT",
            help="resume from the latest checkpoint in output_dir, or from the one given",
        )  # fmt: skip
    command.set_defaults(func=_cmd_config_run, runner=runner, print_result=print_result,
                         accepts_overrides=True)  # fmt: skip


def _add_data_commands(commands: argparse._SubParsersAction) -> None:
    """``medvl data validate | convert | phantoms``."""
    data = commands.add_parser("data", help="manifests and datasets").add_subparsers(
        dest="data_command", required=True, metavar="COMMAND"
    )
    validate = data.add_parser(
        "validate", help="validate a JSONL manifest",
        description="Check every record of a JSONL manifest of Samples and report all errors with "
        "their line numbers, then counts per split, answer type and modality. Exit code 1 if any "
        "record is invalid.",
    )
    validate.add_argument("manifest", help="path to a .jsonl manifest")
    validate.add_argument(
        "--no-check-files", action="store_true", help="do not check that image/mask files exist"
    )
    validate.set_defaults(func=_cmd_data_validate)

    convert = data.add_parser(
        "convert", help="convert a public dataset folder into a manifest",
        description="Convert a local copy of a public dataset, in its released layout, into a "
        "medvl JSONL manifest (nothing is downloaded). Formats: vqa_rad, slake, pathvqa, "
        "omnimedvqa, pmc_vqa, 3dreasonknee, mm_retinal_reason.",
    )
    convert.add_argument("--format", required=True, help="dataset layout, e.g. slake")
    convert.add_argument("src", help="the dataset's root folder")
    convert.add_argument("--out", required=True, help="manifest to write (.jsonl)")
    convert.add_argument("--split", help="only this split (train, val, test)")
    convert.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="adapter option, value read as YAML (e.g. language=zh, version=2, "
        "access=[open], trust_pickle=true); repeatable",
    )
    convert.set_defaults(func=_cmd_data_convert)

    phantoms = data.add_parser(
        "phantoms", help="write synthetic scans with known lesions and their manifest",
        description="Write N synthetic cases per kind (knee MRI 3D as NIfTI and DICOM series, "
        "retinal fundus PNG, chest X-ray DICOM and PNG) with exact boxes, masks and grades, and "
        "a manifest.jsonl of questions of every answer type. Deterministic for a seed.",
    )
    phantoms.add_argument("--out", required=True, help="output folder")
    phantoms.add_argument("--n", type=int, default=10, help="cases per kind (default 10)")
    phantoms.add_argument("--seed", type=int, default=0)
    phantoms.add_argument("--kinds", default="knee,fundus,chest", type=_phantom_kinds,
                          help="comma-separated: knee, fundus, chest")  # fmt: skip
    phantoms.set_defaults(func=_cmd_data_phantoms)


def _add_quickstart(commands: argparse._SubParsersAction, families: Any, sizes: Any) -> None:
    """``medvl quickstart``."""
    quick = commands.add_parser(
        "quickstart", help="end-to-end tour on bundled real scans",
        description="Build the small offline model (or load --model), load the real scans that "
        "pydicom, nibabel, nilearn and scikit-image ship, ask the model about each (volumes as "
        "video frames) and print each answer with its vision-token cost; then write chest, "
        "fundus and knee phantoms, SFT a tiny model with a box head, GRPO from that checkpoint, "
        "and test each stage on held-out cases with their own and swapped scans: accuracy and "
        "mean IoU per answer type, GRPO - SFT with a paired CI, the report.",
    )
    quick.add_argument("--family", choices=families, default="qwen2_5_vl")
    quick.add_argument("--size", choices=sizes, default="small")
    quick.add_argument("--model", help="a local checkpoint folder: part one asks it and part two "
                       "fine-tunes it, instead of the tiny models")
    quick.add_argument("--frames", type=int, default=16, help="video frames per volume (even)")
    quick.add_argument("--max-new-tokens", type=int, default=24)
    quick.add_argument("--sft-steps", type=int, default=600,
                       help="SFT steps on phantoms (0 skips SFT, GRPO and their evaluation)")
    quick.add_argument("--grpo-steps", type=int, default=400,
                       help="GRPO steps from the SFT checkpoint (0 skips them too)")
    quick.add_argument("--fast", action="store_true",
                       help="a few minutes: every stage on few cases and steps (no proof)")
    quick.add_argument("--out", help="folder for phantoms and the fine-tuned model (default: temp)")
    quick.set_defaults(func=_cmd_quickstart)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    """``medvl demo``."""
    demo = commands.add_parser(
        "demo", help="the Gradio demo on a checkpoint",
        description="Serve the Gradio demo (upload a scan, browse slices, ask, see the reasoning, "
        "the answer and the box) on --model (default: MEDVL_DEMO_MODEL, else the small offline "
        "model). Needs the demo extra: pip install -e '.[demo]'.",
    )  # fmt: skip
    demo.add_argument("--model", help="checkpoint folder, e.g. an SFT or GRPO output's final/")
    demo.add_argument("--host", default="127.0.0.1",
                      help="address to serve on (default 127.0.0.1: this machine only)")
    demo.add_argument("--port", type=int, default=None, help="port (default: Gradio's choice)")
    demo.add_argument("--share", action="store_true", help="also open a public Gradio link")
    demo.add_argument("--max-file-size", default="512mb",
                      help="largest upload accepted (default 512mb)")  # fmt: skip
    demo.add_argument("--timeout", type=float, default=120.0,
                      help="seconds one answer may run before generation stops (default 120)")
    demo.set_defaults(func=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medvl`` command (exposed for tests and docs)."""
    from medvl.model.families import FAMILIES, SIZES

    parser = argparse.ArgumentParser(
        prog="medvl", description="Medical vision-language models: scans, models, training.",
        epilog="--debug (anywhere on the line) shows the full traceback of an error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="describe a scan (no patient identifiers)",
        description="Load a scan (DICOM file or series folder, NIfTI, PNG/JPG) and describe it: "
        "shape, spacing, orientation, modality and value range. Patient identifiers are never read "
        "into the output.",
    )
    info.add_argument("scan", help="a DICOM file, DICOM series folder, .nii/.nii.gz, .png or .jpg")
    info.add_argument("--modality", help="override the modality (e.g. CT, MR, CR, OT)")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=_cmd_info)

    _add_data_commands(commands)

    tiny = commands.add_parser("tiny", help="tiny offline models").add_subparsers(
        dest="tiny_command", required=True, metavar="COMMAND"
    )
    build = tiny.add_parser(
        "build", help="build a tiny random-init Qwen-VL model",
        description="Build (offline, deterministic for a seed) a random-init Qwen-VL model with "
        "its real processor and an offline-trained tokenizer; print the folder it was saved to.",
    )
    build.add_argument("--family", choices=FAMILIES, default="qwen2_5_vl")
    build.add_argument("--size", choices=SIZES, default="tiny")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--cache-dir", help="cache root (default: $MEDVL_CACHE or ~/.cache/medvl)")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=_cmd_tiny_build)

    _config_command(
        commands, "sft", "supervised fine-tuning from a YAML config",
        ("medvl.train.sft", "run_sft"),
        "Supervised fine-tuning of a MedVLM (LM loss on the assistant turn plus grounding-head "
        "losses) on accelerate. Any config key can be overridden after the config, e.g. `medvl "
        "sft --config configs/sft_tiny.yaml --lr 1e-5 --lora.r 16`. Checkpoints are written "
        "atomically; --resume continues exactly from the latest.",
        example="configs/sft_tiny.yaml", resume=True,
    )  # fmt: skip
    _config_command(
        commands, "grpo", "GRPO fine-tuning with verifiable rewards from a YAML config",
        ("medvl.train.grpo", "run_grpo"),
        "Group relative policy optimisation of a MedVLM: G sampled answers per question, scored "
        "by verifiable rewards (format, accuracy, box IoU, severity, reasoning length), "
        "group-normalised advantages, clipped surrogate + KL to the reference; log-probs with the "
        "scan encoded once and the prompt's KV cache shared by the group. Any config key can be "
        "overridden after the config, e.g. `--num_generations 8 --beta 0`.",
        example="configs/grpo_tiny.yaml", resume=True,
    )  # fmt: skip
    _config_command(
        commands, "eval", "answer a manifest's questions and score them (resumable)",
        ("medvl.eval.runner", "run_eval"),
        "Run a model over a manifest and append one scored prediction per sample to a JSONL file "
        "(correct, IoU, Dice, HD95, token F1, severity error, latency, tokens). A rerun skips the "
        "ids already written. Any config key can be overridden after the config, e.g. `medvl "
        "eval --config configs/eval_tiny.yaml --model outputs/sft_tiny/final`.",
        example="configs/eval_*.yaml", print_result=False,
    )  # fmt: skip

    report = commands.add_parser(
        "report", help="a Markdown report with CIs, paired comparisons and plots",
        description="Summarise one or more prediction files (one model each): accuracy per answer "
        "type and modality with Wilson CIs, IoU/Dice with bootstrap CIs, HD95, format rate, and, "
        "for several models, McNemar and paired-bootstrap comparisons against the first; writes "
        "report.md, a self-contained report.html with each model's worst cases drawn, "
        "summary.json and PNG plots.",
    )
    report.add_argument("predictions", nargs="+", help="prediction JSONL files from `medvl eval`")
    report.add_argument("--out", required=True, help="output folder")
    report.add_argument("--names", nargs="+", help="a display name per file (default: its model)")
    report.add_argument("--gallery", type=int, default=8,
                        help="worst cases drawn per model in report.html (0: none)")  # fmt: skip
    report.add_argument("--image-root", default=None,
                        help="folder the predictions' image paths are relative to (default: the "
                        "manifest's folder, from each file's .config.yaml)")  # fmt: skip
    report.set_defaults(func=_cmd_report)

    compare = commands.add_parser(
        "compare", help="two runs on their common samples: CIs, McNemar, paired bootstrap",
        description="Compare two prediction files (or run folders with predictions.jsonl) on "
        "the sample ids both hold: each run's accuracy, IoU and reasoning F1 with 95% CIs, then "
        "B - A with McNemar's test (accuracy) and a paired bootstrap (IoU, reasoning F1).",
    )  # fmt: skip
    compare.add_argument("run_a", help="predictions JSONL (or its folder) of run A")
    compare.add_argument("run_b", help="predictions JSONL (or its folder) of run B")
    compare.add_argument("--names", nargs=2, help="labels of A and B")
    compare.set_defaults(func=_cmd_compare)

    _add_quickstart(commands, FAMILIES, SIZES)
    _add_demo(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the input's fault, told as one line (the library's own kinds, and files
    that are missing or not allowed); anything else is a bug and keeps its traceback."""
    from medvl.config import ConfigError
    from medvl.data.adapters._common import AdapterError
    from medvl.data.manifest import ManifestError
    from medvl.data.sample import SampleError
    from medvl.eval.judge import JudgeError
    from medvl.eval.predictions import PredictionFileError
    from medvl.model.loading import ModelLoadError
    from medvl.scans import ScanError

    return (ConfigError, AdapterError, ManifestError, SampleError, JudgeError,
            PredictionFileError, ModelLoadError, ScanError, FileNotFoundError, PermissionError,
            IsADirectoryError, NotADirectoryError)  # fmt: skip


_RESUME_HINTS = {
    "eval": "the answers written so far are kept in the run's predictions.jsonl; rerun the same "
    "command to continue after them",
    "sft": "checkpoints saved so far are kept in output_dir; rerun with --resume to continue "
    "from the latest",
    "grpo": "checkpoints saved so far are kept in output_dir; rerun with --resume to continue "
    "from the latest",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medvl`` console script.

    An error in the input (a scan, manifest, config, prediction file or model folder) is
    printed as ``medvl COMMAND: error: ...`` with exit code 2, without a traceback unless
    ``--debug`` is given (anywhere on the line); Ctrl-C says what was kept and how to resume
    (exit code 130).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        hint = _RESUME_HINTS.get(args.command, "nothing half-written was kept")
        print(f"\nmedvl {args.command}: interrupted; {hint}", file=sys.stderr)
        return 130
    except _user_errors() as err:
        if debug:
            raise
        text = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename:
            text = f"{err.filename}: {err.strerror or err}"
        print(f"medvl {args.command}: error: {text} (--debug shows the traceback)",
              file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
