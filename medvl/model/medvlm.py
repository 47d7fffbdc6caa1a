"""``MedVLM``: a Qwen-VL model with optional LoRA and grounding heads, for answering and SFT.

One object for every use of a model in medvl::

    model = MedVLM.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct", lora={"r": 16}, heads=["box"])
    answer = model.answer(Question("knee.nii.gz", "Where is the tear?", answer_type="grounding"))
    answer.reasoning, answer.answer, answer.box      # box in medvl's normalised scan coordinates

    batch = model.collate(dataset_items)             # SFT: prompt, target, labels, head targets
    out = model(**batch)                             # out.loss = lm + w_box * box + w_mask * mask
    model.save_pretrained("out/final")               # adapter or model, processor, heads, config

Layout of the wrapper::

    MedVLM
    ├── model       Qwen2/2.5/3-VL *ForConditionalGeneration (or a peft.PeftModel around it)
    ├── heads       nn.ModuleDict: box2d / box3d (BoxHead), mask (MaskHead); may be empty
    ├── processor   the model's processor (tokenizer with <|box|> / <|seg|> when heads need them)
    └── config      MedVLMConfig: family, base model, heads, LoRA, prompt settings, loss weights

**What trains.** With LoRA, peft freezes the base model and adds adapters to the language
model's attention and MLP projections only (``q_proj k_proj v_proj o_proj gate_proj up_proj
down_proj`` under ``language_model``; the vision tower is left alone). The grounding tokens'
embedding rows train through peft's ``trainable_token_indices`` — only those rows, saved in the
adapter (``modules_to_save`` would copy the whole embedding matrix, ~0.5 GB on a 3B model). The
heads are modules of the wrapper, outside peft, so they always train and are saved apart as
``heads.safetensors``. Without LoRA, every parameter trains (full fine-tuning).

**New tokens.** ``<|box|>`` / ``<|seg|>`` are added to the tokenizer only when a head needs
them. Qwen-VL checkpoints have spare embedding rows (151936 rows for 151665 tokens), so usually
nothing is resized; the new rows are set to the mean of the existing token embeddings, a
deterministic start that a LoRA checkpoint can redo exactly on load.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoProcessor
from transformers.utils import ModelOutput

from medvl.model.encoding import Collator, HeadTokens
from medvl.model.heads import HeadsConfig, build_heads, load_heads, save_heads
from medvl.model.heads.readout import (
    box_outputs,
    capture_vision,
    mask_outputs,
    pictures_by_row,
)
from medvl.model.heads.tokens import add_grounding_tokens, restore_grounding_tokens, token_ids
from medvl.model.inference import AnsweringMixin
from medvl.model.loading import detect_family, load_vlm, resolve_model, unwrap
from medvl.model.lora import lora_config, lora_summary
from medvl.model.medvlm_config import CONFIG_NAME, HEADS_NAME, MedVLMConfig, heads_config_from
from medvl.model.publish import publish


@dataclass
class MedVLMOutput(ModelOutput):
    """What :meth:`MedVLM.forward` returns (losses unweighted but ``loss``).

    Attributes:
        loss: ``lm_loss + box_loss_weight * box_loss + mask_loss_weight * mask_loss`` (terms
            that exist).
        lm_loss: Cross-entropy on the labelled tokens (None without ``labels``).
        box_loss: L1 + GIoU of the box heads (None without box heads).
        mask_loss: Dice + BCE of the mask head (None without one).
        logits: The LM's logits ``(B, T, V)``.
        boxes: Box head predictions per row ``(B, 6)`` (2D boxes in the first 4 columns, zeros
            for rows without a box token), or None.
        mask_logits: Per row, the mask head's logits ``(T, H, W)`` or None.
    """

    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    box_loss: torch.Tensor | None = None
    mask_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    mask_logits: list[torch.Tensor | None] | None = None


class MedVLM(AnsweringMixin, nn.Module):
    """A Qwen-VL model, its processor, optional LoRA and grounding heads.

    Build it with :meth:`from_pretrained`. Answering (:meth:`answer`, :meth:`answer_batch`,
    :meth:`stream_answer`) lives in :class:`medvl.model.inference.AnsweringMixin`.

    Attributes: ``model``, ``processor``, ``heads`` (``nn.ModuleDict``, empty without heads),
    ``heads_config`` (``HeadsConfig`` or None) and ``config`` (:class:`MedVLMConfig`).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        config: MedVLMConfig,
        heads: nn.ModuleDict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.config = config
        self.heads = heads if heads is not None else nn.ModuleDict()
        self.heads_config: HeadsConfig | None = config.heads_config

    # -- loading and saving -----------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path_or_name: str | os.PathLike,
        lora: Any = None,
        heads: HeadsConfig | Sequence[str] | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
        attn_implementation: str | None = None,
    ) -> MedVLM:
        """Load a plain Qwen-VL model or a MedVLM checkpoint, adding LoRA and heads if asked.

        Args:
            path_or_name: A Qwen-VL folder, hub id or ``tiny:<family>[-<size>]`` (what
                :func:`medvl.model.load_vlm` takes), or a folder written by :meth:`save_pretrained`.
            lora: ``peft.LoraConfig``, or a dict of its arguments (defaults ``r=16``,
                ``lora_alpha=32``, ``lora_dropout=0.05``), or None for no LoRA. Target modules
                default to the language model's projections (`medvl.model.lora.LM_PROJECTIONS`);
                a list of bare names is scoped to the language model too, a regex string is used
                as is.
                Not allowed on a checkpoint that already holds an adapter.
            heads: A ``HeadsConfig``, or names among ``"box"`` (2D and 3D), ``"box2d"``,
                ``"box3d"``, ``"mask"``; None for none (a checkpoint keeps its own heads).
            dtype: Weights' dtype (see :func:`medvl.model.load_vlm`); heads stay float32.
            device: ``"cpu"``, ``"cuda"``, ...
            attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"`` or None.

        Returns:
            The model, in eval mode.
        """
        path_or_name = resolve_model(path_or_name)
        folder = Path(path_or_name).expanduser()
        if (folder / CONFIG_NAME).is_file():
            return cls._from_checkpoint(folder, lora, heads, dtype, device, attn_implementation)
        model, processor = load_vlm(path_or_name, dtype, device, attn_implementation)
        # A local folder is recorded absolute, so a LoRA checkpoint finds it from anywhere.
        base = str(folder.resolve()) if folder.is_dir() else str(path_or_name)
        config = MedVLMConfig(family=detect_family(model.config), base_model=base)
        return cls._assemble(model, processor, config, lora, heads, None)

    @classmethod
    def _from_checkpoint(
        cls, folder: Path, lora: Any, heads: Any, dtype: Any, device: Any, attn: str | None
    ) -> MedVLM:
        config = MedVLMConfig.load(folder)
        heads_config = config.heads_config
        loaded_heads = None
        if heads_config is not None:
            if heads is not None:
                raise ValueError(f"{folder} already has heads {config.heads}; pass heads=None")
            loaded_heads = load_heads(folder / HEADS_NAME, heads_config)
        if not (folder / "adapter_config.json").is_file():  # a full model
            model, processor = load_vlm(folder, dtype, device, attn)
            # Anything built on it (a new adapter) starts from this folder, trained rows included.
            config.base_model, config.init_token_rows = str(folder.resolve()), False
            return cls._assemble(model, processor, config, lora, heads, loaded_heads)
        if lora is not None:
            raise ValueError(f"{folder} holds a LoRA adapter already; pass lora=None")
        from peft import PeftModel

        # The adapter sits on the base model; the tokenizer (with the grounding tokens) is ours.
        model, _ = load_vlm(config.base_model, dtype, device, attn)
        processor = AutoProcessor.from_pretrained(folder)
        processor.tokenizer.padding_side = "left"
        if heads_config is not None:
            restore_grounding_tokens(model, processor, heads_config.tokens, config.init_token_rows)
        model = PeftModel.from_pretrained(model, folder, is_trainable=True)
        model.eval()
        return cls(model, processor, config, _to(loaded_heads, model))

    @classmethod
    def _assemble(
        cls,
        model: nn.Module,
        processor: Any,
        config: MedVLMConfig,
        lora: Any,
        heads: Any,
        loaded_heads: nn.ModuleDict | None,
    ) -> MedVLM:
        """Add new heads (with their tokens) and LoRA to a loaded full model."""
        ids: list[int] = []
        if heads is not None:
            heads_config = heads_config_from(heads, model.config.get_text_config().hidden_size)
            ids, added = add_grounding_tokens(model, processor, heads_config.tokens)
            config.init_token_rows = config.init_token_rows or added
            config.heads = heads_config.to_dict()
            loaded_heads = build_heads(heads_config)
        elif config.heads:
            ids = token_ids(processor, config.heads_config.tokens)
        if lora is not None:
            from peft import get_peft_model

            peft_config = lora_config(lora, ids)
            model = get_peft_model(model, peft_config)
            model.eval()
            config.lora = lora_summary(peft_config)
        return cls(model, processor, config, _to(loaded_heads, model))

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write a checkpoint folder that :meth:`from_pretrained` loads back exactly.

        Contents: the model (``config.json``, ``model.safetensors``) or, with LoRA, only the
        adapter (``adapter_config.json``, ``adapter_model.safetensors``; the base model is
        ``config.base_model``); the processor; ``heads.safetensors``; ``medvl_config.json``.
        Everything is written to a temporary folder beside the target, then renamed, so a crash
        never leaves half a checkpoint; saving into an existing folder keeps its other files
        (:func:`medvl.model.publish.publish`).

        Returns:
            The folder.
        """
        final = Path(save_directory).expanduser()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            if hasattr(self.model, "peft_config"):
                # The adapter that trains, not a frozen one loaded beside it (GRPO's reference).
                self.model.save_pretrained(tmp, selected_adapters=list(self.model.active_adapters))
            else:
                self.model.save_pretrained(tmp)
            self.processor.save_pretrained(tmp)
            if len(self.heads):
                save_heads(self.heads, tmp / HEADS_NAME, self.heads_config)
            self.config.save(tmp)
            publish(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return final

    # -- properties -------------------------------------------------------------------------

    @property
    def family(self) -> str:
        """``qwen2_vl``, ``qwen2_5_vl`` or ``qwen3_vl``."""
        return self.config.family

    @property
    def tokenizer(self) -> Any:
        """The processor's tokenizer."""
        return self.processor.tokenizer

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings."""
        return self.model.get_input_embeddings().weight.device

    @property
    def head_tokens(self) -> HeadTokens:
        """The grounding tokens SFT targets get (none without heads)."""
        hc = self.heads_config
        if hc is None:
            return HeadTokens()
        return HeadTokens(
            box=hc.box_token if hc.box_dims else None, box_dims=hc.box_dims,
            seg=hc.seg_token if hc.mask else None,
        )  # fmt: skip

    @property
    def collator(self) -> Collator:
        """A picklable stand-in for :meth:`collate` (DataLoader workers that spawn)."""
        return Collator(self.processor, self.family, self.config.prompt, self.head_tokens)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters that train: LoRA adapters, grounding-token rows and heads with LoRA;
        everything without."""
        return [p for p in self.parameters() if p.requires_grad]

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Turn on activation checkpointing in the wrapped model (peft-aware)."""
        base = unwrap(self.model)
        base.gradient_checkpointing_enable(**kwargs)
        if base is not self.model:  # frozen embeddings: make checkpointed inputs need grad
            base.enable_input_require_grads()

    # -- training -----------------------------------------------------------------------------

    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Turn dataset items into a training batch (right padding).

        An item is a dict (what :class:`medvl.data.dataset.MedVLDataset` yields):

        * ``sample`` (required): a ``Sample`` or a mapping with ``question``, ``answer_type``,
          ``answer`` (``options`` for choice, ``box`` for grounding; ``reasoning``,
          ``anatomy``, ``modality``, ``severity`` and ``meta.target`` / ``meta.mask_label``
          are used when present). The prompt and the target are rebuilt from it with
          ``prompts.build_prompt`` / ``build_target``; the text of ``messages`` is not used.
        * the picture, either ``messages`` (qwen-vl-utils form; the image / video entries of the
          user turn are used) with ``view`` (the volume's view; None or absent for a 2D scan)
          and ``scan`` (for its spatial shape; optional for 2D), or only ``scan`` (a tensor,
          MetaTensor, PIL image or path, shown with this model's view settings).
        * ``box`` (optional): the box on the scan as preprocessed; replaces ``sample.box``.
        * ``mask`` (optional): the label map on the scan's grid, ``(1, *spatial)`` or
          ``spatial``; its ``meta.mask_label`` (else any label) is the target. Used with a mask
          head, for 2D scans and frame views.

        Returns:
            ``input_ids``, ``attention_mask``, ``mm_token_type_ids``, ``labels`` (-100 except the
            assistant turn's tokens, ``<|im_end|>`` included), the vision tensors
            (``pixel_values`` / ``image_grid_thw`` / ``pixel_values_videos`` /
            ``video_grid_thw`` / ``second_per_grid_ts``), and with box heads ``box_targets``
            ``(B, 6)`` with ``box_dims`` ``(B,)`` (2 or 3; 0: no box), with a mask head
            ``mask_targets`` (per row a ``(T, H, W)`` float tensor or None). Targets contain
            ``<|box|>`` / ``<|seg|>`` right after ``<answer>`` when the row has a box / mask.
        """
        return self.collator(items)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        box_targets: torch.Tensor | None = None,
        box_dims: torch.Tensor | None = None,
        mask_targets: Sequence[torch.Tensor | None] | None = None,
        **model_inputs: Any,
    ) -> MedVLMOutput:
        """LM loss on the labelled tokens plus the heads' losses; takes a :meth:`collate` batch.

        Args:
            input_ids: ``(B, T)``.
            attention_mask: ``(B, T)``.
            labels: ``(B, T)``, -100 where not trained on.
            box_targets: ``(B, 6)`` target boxes (see :meth:`collate`).
            box_dims: ``(B,)`` 2, 3, or 0 for no box.
            mask_targets: Per row a ``(T, H, W)`` target or None.
            **model_inputs: Vision tensors, ``mm_token_type_ids``, ... for the Qwen-VL model.

        Returns:
            A :class:`MedVLMOutput`.
        """
        heads, hc = self.heads, self.heads_config
        with capture_vision(self.model, on="mask" in heads) as captured:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                output_hidden_states=bool(len(heads)), **model_inputs,
            )  # fmt: skip
        parts: dict[str, Any] = {"lm_loss": out.loss, "logits": out.logits}
        weighted = [] if out.loss is None else [out.loss]
        if len(heads):
            hidden = out.hidden_states[-1]
            if hc.box_dims:
                parts["boxes"], parts["box_loss"] = box_outputs(
                    heads, hc, hidden, input_ids, self._box_id, box_targets, box_dims
                )
                weighted.append(self.config.box_loss_weight * parts["box_loss"])
            if hc.mask:
                pictures = pictures_by_row(captured, model_inputs, input_ids, self._base_config)
                parts["mask_logits"], parts["mask_loss"] = mask_outputs(
                    heads["mask"], hc, hidden, input_ids, self._seg_id, pictures, mask_targets
                )
                weighted.append(self.config.mask_loss_weight * parts["mask_loss"])
        return MedVLMOutput(loss=sum(weighted) if weighted else None, **parts)

    @property
    def _head_token_strings(self) -> list[str]:
        hc = self.heads_config
        return [] if hc is None else hc.tokens

    @property
    def _box_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.heads_config.box_token)

    @property
    def _seg_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.heads_config.seg_token)

    @property
    def _base_config(self) -> Any:
        return unwrap(self.model).config


# -- helpers -----------------------------------------------------------------------------------


def _to(heads: nn.ModuleDict | None, model: nn.Module) -> nn.ModuleDict | None:
    """Put heads where the LM's last hidden states are (its output layer's device, also under
    ``device_map="auto"``), in float32 whatever the LM's dtype: they are small, and boxes need
    the precision."""
    if heads is None:
        return None
    return heads.to(device=model.get_output_embeddings().weight.device, dtype=torch.float32)
