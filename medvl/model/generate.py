"""Ask a Qwen-VL model one question about an image or a volume, and get its answer.

The smallest end-to-end use of a plain Qwen-VL model (no heads, no medvl prompt): build the
messages, apply the chat template, run the processor (`medvl.model.inputs`), generate, decode the
new tokens. The quickstart uses it::

    model, processor = load_vlm(build_tiny_model("qwen2_5_vl"))
    result = ask(model, processor, "Is there a tear?", video=frames)  # frames: list of PIL images
    print(result.text, result.vision_tokens)

A 3D scan goes in as a video whose frames are its slices, all the same size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from transformers import PreTrainedModel, ProcessorMixin

from medvl.model.inputs import build_messages, prepare_inputs


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
