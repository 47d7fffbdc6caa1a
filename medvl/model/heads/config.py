"""Which heads a MedVLM has (``HeadsConfig``), building them, and saving them as safetensors.

A checkpoint folder holds the heads' weights in one safetensors file and their config beside it
(JSON or YAML) — and also inside the file's metadata, so the file alone can be loaded::

    config = HeadsConfig(hidden_size=2048, box_dims=(2, 3), mask=True)
    heads = build_heads(config)                 # nn.ModuleDict: "box2d", "box3d", "mask"
    save_heads(heads, folder / "heads.safetensors", config)
    config.save(folder / "heads.yaml")
    heads = load_heads(folder / "heads.safetensors")   # config read from the metadata
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from medvl._io import atomic_write, atomic_write_text
from medvl.model.heads.box import BoxHead
from medvl.model.heads.losses import (
    DEFAULT_BOX_GIOU_WEIGHT,
    DEFAULT_BOX_L1_WEIGHT,
    DEFAULT_MASK_BCE_WEIGHT,
    DEFAULT_MASK_DICE_WEIGHT,
)
from medvl.model.heads.mask import MaskHead

_METADATA_KEY = "medvl_heads_config"


@dataclass
class HeadsConfig:
    """The grounding heads of a model and how they are trained.

    Attributes:
        hidden_size: LM hidden size (``model.config.text_config.hidden_size``).
        box_dims: Box heads to build: ``(2,)``, ``(3,)``, ``(2, 3)`` or ``()`` for none. Both read
            the ``box_token`` state; the sample's dimensionality picks the head.
        mask: Build a ``MaskHead``.
        vision_size: Width of the merged vision tokens; None means ``hidden_size``.
        box_mlp_size: Hidden width of the box MLP; None means ``hidden_size``.
        mask_dim: Query/key width of the mask head.
        mask_refine_size: Channels of the mask head's refinement convolutions (0: none).
        box_token: The token whose state a box head reads.
        seg_token: The token whose state the mask head reads.
        box_l1_weight: Weight of the L1 box term.
        box_giou_weight: Weight of the ``1 - GIoU`` box term.
        mask_dice_weight: Weight of the Dice mask term.
        mask_bce_weight: Weight of the binary cross-entropy mask term.
    """

    hidden_size: int
    box_dims: tuple[int, ...] = (2,)
    mask: bool = False
    vision_size: int | None = None
    box_mlp_size: int | None = None
    mask_dim: int = 256
    mask_refine_size: int = 32
    box_token: str = "<|box|>"
    seg_token: str = "<|seg|>"
    box_l1_weight: float = DEFAULT_BOX_L1_WEIGHT
    box_giou_weight: float = DEFAULT_BOX_GIOU_WEIGHT
    mask_dice_weight: float = DEFAULT_MASK_DICE_WEIGHT
    mask_bce_weight: float = DEFAULT_MASK_BCE_WEIGHT

    def __post_init__(self) -> None:
        self.box_dims = tuple(sorted({int(d) for d in self.box_dims}))
        if any(d not in (2, 3) for d in self.box_dims):
            raise ValueError(f"box_dims may hold only 2 and 3, got {self.box_dims}")
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be positive, got {self.hidden_size}")

    @property
    def head_names(self) -> list[str]:
        """Names of the heads, as keys of :func:`build_heads`: ``box2d``, ``box3d``, ``mask``."""
        return [f"box{d}d" for d in self.box_dims] + (["mask"] if self.mask else [])

    @property
    def tokens(self) -> list[str]:
        """The grounding tokens the tokenizer needs for these heads."""
        return ([self.box_token] if self.box_dims else []) + ([self.seg_token] if self.mask else [])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-safe values."""
        data = asdict(self)
        data["box_dims"] = list(self.box_dims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadsConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error, naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown HeadsConfig keys {unknown}; expected some of {sorted(known)}"
            )
        return cls(**dict(data))

    def save(self, path: str | os.PathLike) -> None:
        """Write as YAML (``.yaml``/``.yml``) or else JSON."""
        path = Path(path)
        data = self.to_dict()
        text = (
            yaml.safe_dump(data, sort_keys=False)
            if path.suffix in (".yaml", ".yml")
            else json.dumps(data, indent=2) + "\n"
        )
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> HeadsConfig:
        """Read a file written by :meth:`save` (YAML is a superset of JSON, so either parses)."""
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))


def build_heads(config: HeadsConfig) -> nn.ModuleDict:
    """Fresh heads for ``config``, keyed by :attr:`HeadsConfig.head_names`."""
    heads: dict[str, nn.Module] = {
        f"box{d}d": BoxHead(config.hidden_size, dim=d, mlp_size=config.box_mlp_size)
        for d in config.box_dims
    }
    if config.mask:
        heads["mask"] = MaskHead(
            config.hidden_size,
            vision_size=config.vision_size,
            dim=config.mask_dim,
            refine_size=config.mask_refine_size,
        )
    return nn.ModuleDict(heads)


def heads_state_dict(heads: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """All heads' tensors in one flat dict, ``"<head>.<parameter>"``, detached and contiguous."""
    return {
        f"{name}.{key}": value.detach().contiguous()
        for name, head in heads.items()
        for key, value in head.state_dict().items()
    }


def save_heads(
    heads: Mapping[str, nn.Module], path: str | os.PathLike, config: HeadsConfig | None = None
) -> Path:
    """Write the heads' weights to a safetensors file, atomically (temporary file, then rename).

    Args:
        heads: ``{name: head}``, e.g. from :func:`build_heads`.
        path: The ``.safetensors`` file to write.
        config: Stored in the file's metadata, so :func:`load_heads` needs nothing else.

    Returns:
        ``path``.
    """
    metadata = {"format": "pt"}
    if config is not None:
        metadata[_METADATA_KEY] = json.dumps(config.to_dict())
    state = {k: v.cpu() for k, v in heads_state_dict(heads).items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_heads(
    path: str | os.PathLike,
    config: HeadsConfig | None = None,
    device: str | torch.device = "cpu",
) -> nn.ModuleDict:
    """Build the heads of ``config`` and load their weights from :func:`save_heads`' file.

    Args:
        path: The safetensors file.
        config: The heads' config; default the one stored in the file's metadata.
        device: Where to put the heads.

    Returns:
        An ``nn.ModuleDict`` of the heads, weights loaded strictly.

    Raises:
        ValueError: If the file has no config and none is given, or its tensors do not match.
    """
    path = Path(path)
    if config is None:
        with safe_open(str(path), framework="pt") as f:
            stored = (f.metadata() or {}).get(_METADATA_KEY)
        if stored is None:
            raise ValueError(f"{path} holds no HeadsConfig in its metadata; pass config=")
        config = HeadsConfig.from_dict(json.loads(stored))
    heads = build_heads(config)
    state = load_file(str(path), device=str(device))
    expected = heads_state_dict(heads)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match heads {config.head_names}: missing {missing}, "
            f"unexpected {unexpected}"
        )
    for name, head in heads.items():
        prefix = f"{name}."
        head.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    return heads.to(device)
