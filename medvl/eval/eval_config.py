"""`EvalConfig`: everything an evaluation run needs (`medvl.eval.runner` runs it)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvl.config import YamlConfig

__all__ = ["MATCHERS", "EvalConfig"]

MATCHERS = ("embedding", "judge", "none")
#: The settings that change what a model answers: predictions made with other values are not
#: appended to (a rerun with other values must name another output, or pass ``force``).
GENERATION_SETTINGS = ("model", "max_new_tokens", "reasoning", "view", "n_frames", "do_sample",
                       "seed", "dtype")  # fmt: skip
_CHECKPOINT_DIR = re.compile(r"^(final|checkpoint[-_].*|step[-_].*)$")


@dataclass
class EvalConfig(YamlConfig):
    """Everything an evaluation run needs; load it with `EvalConfig.from_yaml` (`medvl.config`).

    Attributes:
        model: A model folder / hub id for `MedVLM.from_pretrained` (a plain Qwen-VL or a
            MedVLM checkpoint such as ``outputs/sft_tiny/final``), or ``tiny:<family>-<size>``
            (e.g. ``tiny:qwen2_5_vl-tiny``) for `medvl.model.build_tiny_model`.
        models: Several models answered in turn, one predictions file each (instead of
            ``model``; ``output``, if set, must hold ``{name}``, replaced by each model's name).
        manifest: JSONL manifest of the samples to answer.
        output: Predictions JSONL; default ``outputs/eval/<model_name>/predictions.jsonl``.
        model_name: Label written in every line's ``model``; default from ``model`` (the
            ``tiny:`` string, or the folder's name — with its parent's for ``final`` /
            ``checkpoint-*`` folders).
        split: Only samples of this split (None: all).
        max_samples: Only the first N samples (after the split filter; None: all).
        batch_size: Questions per `MedVLM.answer_batch` call.
        max_new_tokens: Most tokens generated per answer.
        reasoning: Ask for ``<think>`` reasoning first (None: the model config's default).
        view: How volumes are shown: ``frames``, ``montage``, ``slice``, ``mip`` (None: model's).
        n_frames: Frames / tiles of a volume (None: the model's).
        do_sample: Sample instead of greedy decoding.
        dtype: Weights' dtype (`medvl.model.resolve_dtype`: None is bf16 on CUDA, else fp32).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        check_files: Require every image/mask of the manifest to exist before starting.
        seed: Seeds torch/numpy/random before loading the model and answering.
        progress: Show a tqdm progress bar.
        reasoning_matcher: How reasoning steps are matched to the reference's:
            ``embedding`` (offline sentence embeddings,
            `medvl.eval.reasoning_matcher.EmbeddingMatcher`),
            ``judge`` (an LLM over an OpenAI-compatible endpoint named by
            ``$MEDVL_JUDGE_BASE_URL`` / ``$MEDVL_JUDGE_MODEL``, `medvl.eval.judge`) or ``none``
            (no reasoning scores).
        judge_model: With ``reasoning_matcher: judge``, a local model that judges in this
            process (a Qwen-VL folder or medvl checkpoint, `medvl.eval.judge.local_chat`)
            instead of the endpoint.
        reasoning_threshold: The matcher's similarity threshold (None: its calibrated default).
        force: Append to predictions made with other generation settings (see
            `GENERATION_SETTINGS`); without it such a rerun is refused.
    """

    model: str = ""
    models: list[str] | None = None
    manifest: str = ""
    output: str | None = None
    model_name: str | None = None
    split: str | None = None
    max_samples: int | None = None
    batch_size: int = 8
    max_new_tokens: int = 256
    reasoning: bool | None = None
    view: str | None = None
    n_frames: int | None = None
    do_sample: bool = False
    dtype: str | None = None
    device: str = "auto"
    check_files: bool = True
    seed: int = 0
    progress: bool = True
    reasoning_matcher: str = "embedding"
    judge_model: str | None = None
    reasoning_threshold: float | None = None
    force: bool = False

    def differing_settings(self, saved: EvalConfig) -> dict[str, tuple[Any, Any]]:
        """``{field: (saved, now)}`` for the `GENERATION_SETTINGS` that differ from ``saved``."""
        return {
            name: (getattr(saved, name), getattr(self, name))
            for name in GENERATION_SETTINGS
            if getattr(saved, name) != getattr(self, name)
        }

    def __post_init__(self) -> None:
        if self.reasoning_matcher not in MATCHERS:
            raise ValueError(
                f"reasoning_matcher must be one of {', '.join(MATCHERS)}, "
                f"got {self.reasoning_matcher!r}"
            )
        if not self.model and not self.models:
            raise ValueError("model (or models) is required: a model folder or "
                             "tiny:<family>-<size>")  # fmt: skip
        if self.models and self.model:
            raise ValueError("give model or models, not both")
        if self.models and self.output and "{name}" not in self.output:
            raise ValueError("with several models, output must hold {name} (e.g. "
                             f"outputs/eval/{{name}}.jsonl), got {self.output!r}")  # fmt: skip
        if self.models and self.model_name:
            raise ValueError("model_name names one model; with models each is named by its path")
        if not self.manifest:
            raise ValueError("manifest is required")
        if self.judge_model and self.reasoning_matcher != "judge":
            raise ValueError("judge_model is used by reasoning_matcher: judge only, got "
                             f"reasoning_matcher {self.reasoning_matcher!r}")  # fmt: skip
        for name in ("batch_size", "max_new_tokens", "n_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_samples is not None and self.max_samples < 0:
            raise ValueError(f"max_samples must be >= 0, got {self.max_samples}")

    @property
    def resolved_model_name(self) -> str:
        """`model_name`, or the label derived from `model`."""
        if self.model_name:
            return self.model_name
        if self.model.startswith("tiny:"):  # a tiny build: its spec is its name
            return self.model
        path = Path(self.model.rstrip("/\\"))
        if _CHECKPOINT_DIR.match(path.name) and path.parent.name:
            return f"{path.parent.name}/{path.name}"
        return path.name or self.model

    def each_model(self) -> list[EvalConfig]:
        """One config per model: itself, or one per entry of ``models``."""
        if not self.models:
            return [self]
        configs = []
        for spec in self.models:
            one = dataclasses.replace(self, model=spec, models=None, output=None)
            if self.output:
                safe = re.sub(r"[^A-Za-z0-9._-]+", "_", one.resolved_model_name).strip("_")
                one.output = self.output.replace("{name}", safe or "model")
            configs.append(one)
        return configs

    @property
    def output_path(self) -> Path:
        """`output`, or ``outputs/eval/<model name>/predictions.jsonl``."""
        if self.output:
            return Path(self.output)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", self.resolved_model_name).strip("_") or "model"
        return Path("outputs") / "eval" / safe / "predictions.jsonl"

    @property
    def config_path(self) -> Path:
        """Where the config used is saved: ``<output>.config.yaml``."""
        out = self.output_path
        return out.with_name(out.name + ".config.yaml")
