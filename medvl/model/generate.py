"""Ask a Qwen-VL model one question about an image or a volume, and get its answer.

The smallest end-to-end use of a model: build the messages, apply the chat template, run the
processor, generate, decode the new tokens. The quickstart and :class:`medvl.model.MedVLM` use it::

    model, processor = load_vlm(build_tiny_model("qwen2_5_vl"))
    result = ask(model, processor, "Is there a tear?", video=frames)  # frames: list of PIL images
    print(result.text, result.vision_tokens)

A 3D scan goes in as a video whose frames are its slices, all the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin, Qwen3VLProcessor


@dataclass
class AskResult:
    """What :func:`ask` returns.

    Attributes:
        text: The decoded answer (new tokens only, special tokens removed).
        vision_tokens: Image and video pad tokens in the prompt: what the scan cost.
        prompt_tokens: Length of the prompt in tokens, vision tokens included.
        new_tokens: Tokens generated, end-of-turn token included.
    """

    text: str
    vision_tokens: int
    prompt_tokens: int
    new_tokens: int


def build_messages(
    question: str,
    image: Image.Image | None = None,
    video: list[Image.Image] | None = None,
    system: str | None = None,
) -> list[dict[str, Any]]:
    """One user turn in the message format of qwen-vl-utils (vision items before the text)."""
    content: list[dict[str, Any]] = []
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


@torch.inference_mode()
def ask(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    question: str,
    image: Image.Image | None = None,
    video: list[Image.Image] | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    system: str | None = None,
    video_fps: float = 2.0,
) -> AskResult:
    """Ask ``model`` one question about an optional image and/or video, and decode the answer.

    Args:
        model: A Qwen-VL model from :func:`medvl.model.load_vlm`.
        processor: Its processor.
        question: The user's text.
        image: A 2D image (any PIL mode; converted to RGB).
        video: Frames of a video or the slices of a volume, all of one size.
        max_new_tokens: Most tokens to generate.
        do_sample: Sample instead of greedy decoding.
        system: A system prompt; ``None`` keeps the family default (Qwen2/2.5-VL add "You are a
            helpful assistant.", Qwen3-VL adds none).
        video_fps: Frame rate given to the video (see :func:`prepare_inputs`).

    Returns:
        An :class:`AskResult`.
    """
    messages = build_messages(question, image=image, video=video, system=system)
    inputs = prepare_inputs(processor, messages, video_fps=video_fps).to(model.device)
    input_ids = inputs["input_ids"]
    vision_ids = torch.tensor(
        [processor.image_token_id, processor.video_token_id], device=input_ids.device
    )
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample)
    new = output[0, input_ids.shape[1] :]
    return AskResult(
        text=processor.tokenizer.decode(new, skip_special_tokens=True),
        vision_tokens=int(torch.isin(input_ids, vision_ids).sum()),
        prompt_tokens=int(input_ids.shape[1]),
        new_tokens=int(new.numel()),
    )
