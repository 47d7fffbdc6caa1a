"""The ``medvl`` console script, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medvl.cli import build_parser, main

MEDVL = [sys.executable, "-m", "medvl.cli"]
SFT_TINY = str(Path(__file__).parents[1] / "configs" / "sft_tiny.yaml")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MEDVL, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def _subcommand_paths(parser, prefix=()):
    """Every command path of the parser, e.g. ('data', 'validate')."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield (*prefix, name)
            yield from _subcommand_paths(sub, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_subcommand_paths(build_parser())])
def test_every_command_has_help(path):
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: medvl" in result.stdout


def test_info_reports_shape_and_spacing_as_json():
    result = run_cli("info", get_testdata_file("CT_small.dcm"), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["modality"] == "CT"
    assert info["format"] == "dicom"
    assert info["shape"] == [128, 128]
    assert len(info["spacing_mm"]) == 2 and all(s > 0 for s in info["spacing_mm"])
    assert info["value_range"][0] < info["value_range"][1]


def test_info_on_a_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.nii.gz"
    result = run_cli("info", str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert "Traceback" not in result.stderr


def _write_manifest(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_data_validate_exit_codes(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    good = {
        "id": "s1", "image": "a.png", "modality": "OT", "anatomy": "chest",
        "question": "Is there a nodule?", "answer": "yes", "answer_type": "closed",
    }
    ok = _write_manifest(tmp_path / "ok.jsonl", [good])
    assert main(["data", "validate", str(ok)]) == 0

    bad = _write_manifest(
        tmp_path / "bad.jsonl", [good, {**good, "id": "s2", "answer_type": "riddle"}]
    )
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert ":2" in out and "answer_type" in out


def test_tiny_build_prints_a_loadable_folder(tmp_path):
    result = run_cli(
        "tiny", "build", "--family", "qwen2_vl", "--size", "tiny", "--cache-dir", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert folder.is_dir() and (folder / "config.json").is_file()
    assert folder.is_relative_to(tmp_path)


def test_data_phantoms_names_an_unknown_kind_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "ph"
    with pytest.raises(SystemExit) as exit_:
        main(["data", "phantoms", "--out", str(out), "--n", "1", "--kinds", "chest,brain"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --kinds: unknown phantom kind(s) ['brain']" in err and "Traceback" not in err
    assert not out.exists()


def test_data_phantoms_writes_a_manifest_that_validates(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["data", "phantoms", "--out", str(out), "--n", "1", "--kinds", "fundus,chest"]) == 0
    manifest = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert manifest == out / "manifest.jsonl" and manifest.is_file()
    assert main(["data", "validate", str(manifest)]) == 0
    assert "X-ray" in capsys.readouterr().out


def test_data_convert_with_an_option(tmp_path, capsys):
    from adapter_fixtures import make_slake

    src = make_slake(tmp_path / "Slake1.0")
    out = tmp_path / "slake.jsonl"
    code = main(["data", "convert", "--format", "SLAKE", str(src), "--out", str(out),
                 "--option", "language=null"])
    assert code == 0, capsys.readouterr().err
    assert "written" in capsys.readouterr().out
    assert main(["data", "validate", str(out)]) == 0


def test_data_convert_that_writes_nothing_fails(tmp_path, capsys):
    from adapter_fixtures import make_slake

    src = make_slake(tmp_path / "Slake1.0")  # its test split's only image is missing
    code = main(["data", "convert", "--format", "slake", str(src), "--out",
                 str(tmp_path / "t.jsonl"), "--split", "test"])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "written 0 samples" in captured.out and "no sample written" in captured.err


def test_data_convert_wrong_layout_names_the_expected_file(tmp_path, capsys):
    code = main(["data", "convert", "--format", "vqa_rad", str(tmp_path), "--out",
                 str(tmp_path / "m.jsonl")])
    assert code == 2
    assert "VQA_RAD Dataset Public.json" in capsys.readouterr().err
    assert not (tmp_path / "m.jsonl").exists()


def test_sft_runs_from_the_yaml_config_with_overrides(tmp_path, capsys):
    assert main(["data", "phantoms", "--out", str(tmp_path / "ph"), "--n", "1",
                 "--kinds", "fundus"]) == 0
    manifest = Path(capsys.readouterr().out.strip().splitlines()[-1])
    out = tmp_path / "run"
    args = ["sft", "--config", SFT_TINY, "--train_manifest", str(manifest),
            "--output_dir", str(out), "--max_steps", "2", "--save_every", "1", "--progress",
            "false", "--report_to", "none"]
    assert main(args) == 0
    final = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert final == out / "final" and (final / "medvl_config.json").is_file()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    saved = (out / "config.yaml").read_text()
    assert "max_steps: 2" in saved


def test_sft_unknown_key_names_it(tmp_path, capsys):
    code = main(["sft", "--config", SFT_TINY, "--learning_rat", "1e-5"])
    assert code == 2
    assert "learning_rat" in capsys.readouterr().err


def test_eval_then_report(tmp_path, capsys):
    assert main(["data", "phantoms", "--out", str(tmp_path / "ph"), "--n", "1",
                 "--kinds", "chest"]) == 0
    manifest = capsys.readouterr().out.strip().splitlines()[-1]
    preds = tmp_path / "preds.jsonl"
    args = ["eval", "--config", str(Path(SFT_TINY).with_name("eval_tiny.yaml")), "--manifest",
            manifest, "--output", str(preds), "--max_samples", "3", "--max_new_tokens", "4",
            "--progress", "false"]
    assert main(args) == 0
    lines = preds.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["model"] for line in lines)
    assert main(["report", str(preds), "--out", str(tmp_path / "rep"), "--gallery", "2"]) == 0
    page, report = (Path(p) for p in capsys.readouterr().out.strip().splitlines()[-2:])
    assert report.name == "report.md" and "accuracy" in report.read_text().lower()
    assert (tmp_path / "rep" / "summary.json").is_file()
    # The gallery found the scans through the run's config: two cards, each with its picture.
    html = page.read_text(encoding="utf-8")
    assert html.count('<figure class="case') == 2 and 'class="missing"' not in html


def test_report_on_a_missing_key_names_the_line(tmp_path, capsys):
    bad = tmp_path / "p.jsonl"
    bad.write_text(json.dumps({"id": "a", "model": "m", "correct": True}) + "\n"
                   + json.dumps({"id": "b", "model": "m", "correct": True}) + "\n")
    assert main(["report", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "p.jsonl:1" in capsys.readouterr().err


def test_grpo_runs_from_the_yaml_config_and_resumes(tmp_path, capsys):
    assert main(["data", "phantoms", "--out", str(tmp_path / "ph"), "--n", "1",
                 "--kinds", "chest"]) == 0
    manifest = capsys.readouterr().out.strip().splitlines()[-1]
    out = tmp_path / "grpo"
    args = ["grpo", "--config", str(Path(SFT_TINY).with_name("grpo_tiny.yaml")),
            "--train_manifest", manifest, "--output_dir", str(out), "--max_steps", "1",
            "--save_every", "1", "--max_new_tokens", "4", "--batch_size", "1",
            "--num_generations", "2", "--progress", "false", "--report_to", "none"]
    assert main(args) == 0
    assert Path(capsys.readouterr().out.strip().splitlines()[-1]) == out / "final"
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    # Resuming a finished run continues from checkpoint-1 and has nothing left to do.
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["global_step"] == 1


def test_demo_names_a_missing_model_folder(tmp_path, capsys) -> None:
    pytest.importorskip("gradio")
    missing = tmp_path / "no_such_run" / "final"
    assert main(["demo", "--model", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such folder" in err



EVAL_TINY = str(Path(SFT_TINY).with_name("eval_tiny.yaml"))


@pytest.fixture(scope="module")
def chest_manifest(tmp_path_factory) -> Path:
    from medvl.data.phantom_samples import generate_phantom_dataset

    out = tmp_path_factory.mktemp("chest")
    return generate_phantom_dataset(out, n=2, modalities=("chest",), progress=False)


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run ``medvl argv`` here; it must fail with exit code 2 and one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"medvl {argv[0]}: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_eval_tells_a_bad_manifest_line_a_missing_image_and_a_bad_scan(
    chest_manifest, tmp_path, capsys
):
    records = chest_manifest.read_text().splitlines()
    bad_line = chest_manifest.with_name("bad_line.jsonl")  # beside the images it names
    bad_line.write_text("\n".join([records[0], '{"id": "x", "question": ', *records[1:]]) + "\n")
    common = ["eval", "--config", EVAL_TINY, "--max_samples", "2", "--progress", "false",
              "--max_new_tokens", "2"]  # fmt: skip
    line = _one_line_error(capsys, [*common, "--manifest", str(bad_line), "--output",
                                    str(tmp_path / "a.jsonl")])  # fmt: skip
    assert "bad_line.jsonl:2" in line
    first = json.loads(records[0])
    missing = chest_manifest.with_name("missing.jsonl")
    missing.write_text(json.dumps({**first, "image": "nowhere/scan.dcm"}) + "\n")
    line = _one_line_error(capsys, [*common, "--manifest", str(missing), "--output",
                                    str(tmp_path / "b.jsonl")])  # fmt: skip
    assert "nowhere/scan.dcm" in line
    line = _one_line_error(capsys, ["info", str(bad_line)])
    assert "bad_line.jsonl" in line and "unknown file type" in line
    with pytest.raises(Exception, match="nowhere/scan.dcm"):  # --debug: the real exception
        main([*common, "--manifest", str(missing), "--output", str(tmp_path / "c.jsonl"),
              "--debug"])  # fmt: skip


def test_ctrl_c_says_what_was_kept_and_how_to_resume(chest_manifest, tmp_path):
    import signal
    import time

    out = tmp_path / "p.jsonl"
    # Long enough (every sample, 256 tokens each) that SIGINT after the first line lands mid-run.
    command = [*MEDVL, "eval", "--config", EVAL_TINY, "--manifest", str(chest_manifest),
               "--output", str(out), "--max_samples", "null", "--batch_size", "1",
               "--max_new_tokens", "256", "--progress", "false"]  # fmt: skip
    # As from a terminal: SIGINT handled by default (a test before may have left pytest, and so
    # its children, ignoring it; Python then never raises KeyboardInterrupt).
    def like_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                            preexec_fn=like_a_terminal)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out.is_file() and out.read_text().count("\n")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "medvl eval: interrupted; the answers written so far are kept" in err
    kept = out.read_text().count("\n")
    assert 1 <= kept < len(chest_manifest.read_text().splitlines())
    # The same settings resume after the kept lines (one more sample, to stay quick).
    resumed = run_cli(*command[3:-2], "--max_samples", str(kept + 1), "--progress", "false")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_text().count("\n") == kept + 1
