"""Config dataclasses: YAML loading, command-line overrides, type coercion, errors, round trips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from medvl.config import ConfigError, YamlConfig, coerce, parse_overrides
from medvl.data.dataset import DatasetConfig
from medvl.train.sft import SFTConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Inner:
    size: int = 3
    name: str | None = None


@dataclass
class Demo(YamlConfig):
    """A config of every supported field kind, as GRPOConfig / EvalConfig would declare."""

    lr: float = 1e-3
    steps: int = 10
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    betas: tuple[float, float] = (0.9, 0.999)
    names: list[str] = field(default_factory=list)
    extra: dict | None = None
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["sft_tiny.yaml", "sft_qwen2_5_vl_3b_lora.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = SFTConfig.from_yaml(CONFIGS / name)
    assert isinstance(config.lr, float) and config.lr > 0
    assert isinstance(config.dataset, DatasetConfig)
    assert config.lora and isinstance(config.lora["r"], int)


def test_overrides_coerce_to_field_types(tmp_path: Path) -> None:
    path = write(tmp_path, {"train_manifest": "m.jsonl", "lr": "1e-5", "lora": None})
    config = SFTConfig.from_yaml(
        path,
        ["--lr", "3e-4", "--max-steps", "1e2", "--lora.r", "16", "--lora.target_modules",
         "[q_proj, v_proj]", "--dataset.view", "montage", "--dataset.n_frames=4",
         "--betas", "0.8,0.95", "--heads", "box", "--mixed_precision", "bf16",
         "--max_grad_norm", "none", "--progress", "false"],
    )  # fmt: skip
    assert config.lr == 3e-4 and isinstance(config.lr, float)
    assert config.max_steps == 100 and isinstance(config.max_steps, int)
    assert config.lora == {"r": 16, "target_modules": ["q_proj", "v_proj"]}
    assert config.dataset.view == "montage" and config.dataset.n_frames == 4
    assert config.betas == (0.8, 0.95)
    assert config.heads == ["box"]
    assert config.mixed_precision == "bf16"
    assert config.max_grad_norm is None and config.progress is False


def test_yaml_scientific_notation_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads 1e-5 (no dot) as a string; the field type makes it a float.
    config = SFTConfig.from_yaml(write(tmp_path, "train_manifest: m.jsonl\nlr: 1e-5\n"))
    assert config.lr == 1e-5


def test_unknown_key_names_it_and_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path, {"train_manifest": "m.jsonl", "learning_rate": 1e-4})
    with pytest.raises(ConfigError) as err:
        SFTConfig.from_yaml(path)
    message = str(err.value)
    assert "'learning_rate'" in message and str(path) in message
    assert "valid keys:" in message and "lr" in message and "gradient_accumulation_steps" in message

    with pytest.raises(ConfigError, match=r"unknown key 'lrr'.*did you mean 'lr'"):
        SFTConfig.from_dict({"train_manifest": "m"}, ["--lrr", "1"])
    with pytest.raises(ConfigError, match=r"dataset\.vew.*dataset\.view"):
        SFTConfig.from_dict({"train_manifest": "m"}, ["--dataset.vew", "slice"])
    with pytest.raises(ConfigError, match="no sub-key"):
        SFTConfig.from_dict({"train_manifest": "m"}, ["--lr.x", "1"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["--lr", "fast"], "lr: expected float"),
        (["--max_steps", "2.5"], "max_steps: expected int"),
        (["--lr_scheduler", "step"], "one of 'cosine', 'linear', 'constant'"),
        (["--betas", "0.9"], "betas: expected 2 values"),
        (["--progress", "maybe"], "progress: expected bool"),
        (["--dataset.view", "hologram"], "dataset.view"),
        (["--batch_size", "0"], "batch_size must be >= 1"),
    ],
)
def test_bad_values_name_the_key(override: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SFTConfig.from_dict({"train_manifest": "m.jsonl"}, override)


def test_missing_required_field() -> None:
    with pytest.raises(ConfigError, match="train_manifest is required"):
        SFTConfig.from_dict({})


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = SFTConfig.from_yaml(CONFIGS / "sft_tiny.yaml", ["--lr", "2e-4", "--lora.r", "4"])
    saved = config.save_yaml(tmp_path / "out" / "config.yaml")
    assert SFTConfig.from_yaml(saved) == config
    assert [p.name for p in saved.parent.iterdir()] == ["config.yaml"]  # no temp file left
    assert yaml.safe_load(saved.read_text())["lora"]["r"] == 4


def test_generic_config_for_other_trainers(tmp_path: Path) -> None:
    path = write(tmp_path, {"steps": 5, "inner": {"size": 7}, "extra": None})
    config = Demo.from_yaml(
        path, ["--flag", "--mode=b", "--inner.name", "x", "--extra.k", "[1, 2]", "--names", ""]
    )
    assert config.flag is True and config.mode == "b"
    assert config.inner == Inner(size=7, name="x")
    assert config.extra == {"k": [1, 2]} and config.names == []
    assert config.replace(steps="8").steps == 8
    assert Demo.from_dict(config.to_dict()) == config
    flat = config.to_flat_dict()
    assert flat["inner.size"] == 7 and flat["extra.k"] == "[1, 2]" and flat["path"] == "None"
    with pytest.raises(ConfigError, match=r"inner\.size: expected int"):
        Demo.from_dict({"inner": {"size": "big"}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        Demo.from_yaml(write(tmp_path, "- a list\n"))


def test_parse_overrides() -> None:
    assert parse_overrides(["--a", "1", "--b", "--c=x=y", "--d", "-2", "--e-f", "z"]) == {
        "a": "1", "b": True, "c": "x=y", "d": "-2", "e_f": "z",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="expected an option"):
        parse_overrides(["lr", "1"])


def test_coerce_optional_and_none_words() -> None:
    assert coerce("null", int | None) is None
    assert coerce("7", int | None) == 7
    assert coerce("true", bool) is True
    with pytest.raises(ConfigError):
        coerce(True, int)  # a bool is not a count


def test_a_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match=r"/nope\.yaml: cannot read the config file"):
        SFTConfig.from_yaml("/nope.yaml")
