"""From a scan or image to the processor's inputs: the picture the model sees (with the view
that maps it back), the chat messages, and the processor call with its quirks.

    shown = show_scan(scan, ViewSettings("frames", 16))   # picture + view + coordinate facts
    messages = build_messages(question, pictures=[shown.content], system=...)
    inputs = prepare_inputs(processor, messages)           # chat template + processor

A 3D scan goes in as a video whose frames are its slices, all the same size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import ProcessorMixin, Qwen3VLProcessor

from medvl.scans.views import FrameView, ViewSettings, scan_to_image, show_volume

__all__ = [
    "Question",
    "Shown",
    "as_scan",
    "build_messages",
    "picture_sizes",
    "prepare_inputs",
    "show_scan",
]


@dataclass
class Question:
    """One question about one scan, as `MedVLM.answer` takes it.

    Attributes:
        scan: A path (read with ``medvl.scans.load_scan``), a scan tensor / MetaTensor
            ``(C, W, H)`` or ``(C, X, Y, Z)``, or a PIL image (see :func:`as_scan`).
        text: The question.
        options: ``{"A": "...", ...}`` for a choice question.
        answer_type: ``choice``, ``closed``, ``open``, ``grounding`` or ``severity``; default
            ``choice`` with options, else ``open``.
        modality: Named in the prompt (e.g. ``MRI``); default the scan's own when the file says
            (DICOM), since NIfTI and PNG files carry none. Ask as the model was trained: SFT
            prompts name the Sample's modality and anatomy.
        anatomy: Named in the prompt (e.g. ``knee``).
    """

    scan: Any
    text: str
    options: Mapping[str, str] | None = None
    answer_type: str | None = None
    modality: str | None = None
    anatomy: str | None = None


@dataclass
class Shown:
    """A scan made ready for the model: its picture, the view and the facts to map back.

    Attributes:
        content: The message content entry: ``{"type": "image", "image": PIL}`` or
            ``{"type": "video", "video": [PIL frames]}``.
        view: The ``FrameView`` / ``MontageView`` / ``SliceView`` / ``MIPView`` of a volume;
            None for a 2D scan or image.
        scan_ndim: 2 or 3: the dimensionality of the scan's boxes.
        scan_shape: Spatial shape of the scan: ``(W, H)`` or ``(X, Y, Z)``.
        others: Further pictures of the same study (message entries), shown after ``content``;
            boxes and masks refer to ``content``.
    """

    content: dict[str, Any]
    view: Any
    scan_ndim: int
    scan_shape: tuple[int, ...]
    others: list[dict[str, Any]] = field(default_factory=list)

    @property
    def picture_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image, or of each video frame, before the processor."""
        picture = self.content.get("image") or self.content["video"][0]
        return picture.size

    @property
    def n_frames(self) -> int:
        """Frames of the video (1 for an image)."""
        return len(self.content["video"]) if "video" in self.content else 1


def as_scan(scan_or_image: Any) -> torch.Tensor | Image.Image:
    """A path, a tensor / array scan or a PIL image -> a channel-first tensor or the image.

    Args:
        scan_or_image: A file or DICOM folder (read with ``medvl.scans.load_scan``), a MONAI
            ``MetaTensor`` / tensor / array shaped ``(C, W, H)`` (2D) or ``(C, X, Y, Z)`` (3D) —
            a channel-less ``(W, H)`` gets one — or a PIL image.

    Returns:
        The tensor (MetaTensors keep their spacing) or the PIL image.

    Raises:
        ValueError: For a tensor of another rank.
        TypeError: For anything else.
    """
    if isinstance(scan_or_image, Image.Image):
        return scan_or_image
    if isinstance(scan_or_image, (str, os.PathLike)):
        from medvl.scans import load_scan

        return load_scan(scan_or_image)
    if isinstance(scan_or_image, np.ndarray):
        scan_or_image = torch.from_numpy(np.ascontiguousarray(scan_or_image))
    if not isinstance(scan_or_image, torch.Tensor):
        raise TypeError(
            "expected a path, a scan tensor (C, W, H) / (C, X, Y, Z) or a PIL image, got "
            f"{type(scan_or_image).__name__}"
        )
    if scan_or_image.ndim == 2:
        scan_or_image = scan_or_image[None]
    if scan_or_image.ndim not in (3, 4):
        raise ValueError(
            f"a scan is (C, W, H) or (C, X, Y, Z); got shape {tuple(scan_or_image.shape)}"
        )
    return scan_or_image


def show_scan(scan_or_image: Any, settings: ViewSettings | None = None) -> Shown:
    """Turn a scan into the picture the model sees, with the view that maps it back.

    Args:
        scan_or_image: Anything :func:`as_scan` takes.
        settings: How a volume is shown (default ``ViewSettings()``: 16 axial frames); a 2D
            scan or image is always one picture.

    Returns:
        A :class:`Shown`.
    """
    settings = settings or ViewSettings()
    scan = as_scan(scan_or_image)
    if isinstance(scan, Image.Image):
        image = scan.convert("RGB")
        return Shown({"type": "image", "image": image}, None, 2, image.size)
    shape = tuple(int(s) for s in scan.shape[1:])
    if scan.ndim == 3:
        # scan_to_image shows the array as stored, so a box on it is already a scan box.
        return Shown({"type": "image", "image": scan_to_image(scan)}, None, 2, shape)
    view = show_volume(scan, settings)
    if isinstance(view, FrameView):
        return Shown({"type": "video", "video": view.frames}, view, 3, shape)
    return Shown({"type": "image", "image": view.image}, view, 3, shape)


def picture_sizes(inputs: Mapping[str, Any], processor: Any) -> list[tuple[int, int]]:
    """``(width, height)`` after the processor's resize of every picture, images then videos.

    Read from the processor's own output (``*_grid_thw`` counts patches), so it is exactly the
    size the model saw, whatever the processor's pixel limits.
    """
    sizes = []
    for key, sub in (("image_grid_thw", "image_processor"), ("video_grid_thw", "video_processor")):
        grid = inputs.get(key)
        if grid is None:
            continue
        patch = getattr(processor, sub, processor.image_processor).patch_size
        sizes += [(int(w) * patch, int(h) * patch) for _, h, w in grid.tolist()]
    return sizes


def build_messages(
    question: str,
    image: Image.Image | None = None,
    video: list[Image.Image] | None = None,
    system: str | None = None,
    pictures: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One user turn in the message format of qwen-vl-utils (vision items before the text).

    Args:
        question: The user's text.
        image: A picture, as ``{"type": "image", "image": image}``.
        video: Frames, as ``{"type": "video", "video": video}``.
        system: A system turn's text (None: none, so the chat template's default applies).
        pictures: Content entries already built (`Shown.content`), placed before ``image``.
    """
    content: list[dict[str, Any]] = [dict(p) for p in pictures]
    if image is not None:
        content.append({"type": "image", "image": image})
    if video is not None:
        content.append({"type": "video", "video": video})
    content.append({"type": "text", "text": question})
    messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
    return [*messages, {"role": "user", "content": content}]


def prepare_inputs(
    processor: ProcessorMixin,
    messages: list[dict[str, Any]],
    video_fps: float = 2.0,
) -> dict[str, Any]:
    """Render ``messages`` with the chat template and run the processor on text and vision.

    Images and video frames are taken from the messages and handed to the processor as they are,
    so its own pixel limits decide the resize (qwen-vl-utils' ``process_vision_info`` would resize
    first with its own floor of 128 tokens per video frame, and returns ``fps`` as a list that
    transformers 5 rejects).

    Args:
        processor: The model's processor.
        messages: Conversation in qwen-vl-utils form. Images and frames are PIL images (any mode,
            converted to RGB); the frames of one video share one size.
        video_fps: Frame rate assigned to every video. Slices of a volume have no time; 2.0 (the
            qwen-vl-utils default) gives each pair of frames one second: one temporal position
            apart in Qwen2.5-VL's M-RoPE, labelled ``<0.2 seconds>``, ``<1.2 seconds>``, ... (the
            mean time of the pair) in Qwen3-VL's prompt.

    Returns:
        The processor's ``BatchFeature`` (PyTorch tensors) for a batch of one.
    """
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(processor, Qwen3VLProcessor):
        # Qwen3-VL expands a video into "<t seconds><|vision_start|>pads<|vision_end|>" per frame
        # pair. transformers 5.24 substitutes that for the bare <|video_pad|>, which leaves the
        # template's own vision_start/end wrapped around all frames; the reference processor
        # (transformers <= 4.57, vLLM) replaces the whole wrapper, so do that here.
        wrapper = processor.vision_start_token + processor.video_token + processor.vision_end_token
        prompt = prompt.replace(wrapper, processor.video_token)
    images, videos = _vision_inputs(messages)

    kwargs: dict[str, Any] = {}
    if images:
        kwargs["images"] = images
    if videos:
        kwargs["videos"] = videos
        # Frames are given, not decoded from a file: sampling must keep them all, and the
        # metadata carries the fps that Qwen2.5-VL (temporal positions) and Qwen3-VL
        # (timestamps in the prompt) need.
        kwargs["do_sample_frames"] = False
        kwargs["video_metadata"] = [
            {"total_num_frames": len(v), "fps": video_fps, "frames_indices": list(range(len(v)))}
            for v in videos
        ]
    return processor(text=[prompt], return_tensors="pt", **kwargs)


def _kind(item: dict[str, Any]) -> str:
    # The chat template's rule: `type` decides; without it, the key that holds a value.
    if item.get("type"):
        return "image" if item["type"] == "image_url" else item["type"]
    for key in ("image", "video"):
        if item.get(key) is not None:
            return key
    return "text"


def _rgb(picture: Any) -> Image.Image:
    if not isinstance(picture, Image.Image):
        raise TypeError(
            f"images and video frames must be PIL images, got {type(picture).__name__}; "
            "read scan files with medvl.scans"
        )
    return picture.convert("RGB")


def _vision_inputs(messages: list[dict[str, Any]]) -> tuple[list, list]:
    images, videos = [], []
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for item in message["content"]:
            kind = _kind(item)
            if kind == "image":
                images.append(_rgb(item.get("image", item.get("image_url"))))
            elif kind == "video":
                frames = [_rgb(frame) for frame in item["video"]]
                if not frames:
                    raise ValueError("a video needs at least one frame")
                if len(frames) % 2:
                    # Two frames make one temporal patch; repeat the last, as qwen-vl-utils does
                    # (Qwen3-VL's resize rejects a single frame).
                    frames.append(frames[-1])
                videos.append(frames)
    return images, videos
