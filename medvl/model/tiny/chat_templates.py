"""Jinja chat templates with the prompt layout of the Qwen-VL families.

The tiny models built by :mod:`medvl.model.tiny` need a chat template, and they must prompt exactly
like the real checkpoints so that code written against a tiny model runs unchanged on
Qwen2.5-VL-3B. These templates are written for medvl; they produce the layout of the official ones::

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    <|vision_start|><|image_pad|><|vision_end|>What is shown?<|im_end|>
    <|im_start|>assistant

Qwen2-VL and Qwen2.5-VL add that default system prompt when the conversation has none; Qwen3-VL
adds none. Videos are ``<|vision_start|><|video_pad|><|vision_end|>``.

A content item's kind is decided by its ``type`` key when it has one, and only otherwise by which
of ``image`` / ``image_url`` / ``video`` / ``text`` holds a value. Rows that come out of a
``datasets.Dataset`` carry *every* key of the column schema (``{"type": "text", "text": "hi",
"image": None, "video": None}``), so a template that tests ``'video' in item`` inserts stray pads.

Tool calls are not rendered: medvl does not use them.
"""

from __future__ import annotations

# Shared by every family: the kind of one content item, then its rendering.
_ITEM = (
    "{%- if item is string -%}{{ item }}"
    "{%- else -%}"
    "{%- set kind = item.get('type') -%}"
    "{%- if not kind -%}"
    "{%- if item.get('image') is not none or item.get('image_url') is not none -%}"
    "{%- set kind = 'image' -%}"
    "{%- elif item.get('video') is not none -%}{%- set kind = 'video' -%}"
    "{%- else -%}{%- set kind = 'text' -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- if kind == 'image' or kind == 'image_url' -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Picture ' ~ image_count.value ~ ': ' }}{%- endif -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif kind == 'video' -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Video ' ~ video_count.value ~ ': ' }}{%- endif -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif kind == 'text' and item.get('text') is not none -%}{{ item['text'] }}"
    "{%- endif -%}"
    "{%- endif -%}"
)

_MESSAGES = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' and default_system -%}"
    "{{ '<|im_start|>system\\n' ~ default_system ~ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' ~ message['role'] ~ '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- elif message['content'] is not none -%}"
    "{%- for item in message['content'] -%}" + _ITEM + "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def _template(default_system: str | None) -> str:
    # Counters live in namespaces: a plain `set` inside a for loop does not outlive one iteration.
    system = "none" if default_system is None else repr(default_system)
    return (
        "{%- set image_count = namespace(value=0) -%}"
        "{%- set video_count = namespace(value=0) -%}"
        f"{{%- set default_system = {system} -%}}" + _MESSAGES
    )


QWEN2_VL_TEMPLATE = _template("You are a helpful assistant.")
"""Qwen2-VL and Qwen2.5-VL: default system prompt "You are a helpful assistant."."""

QWEN3_VL_TEMPLATE = _template(None)
"""Qwen3-VL (instruct): no default system prompt."""

CHAT_TEMPLATES: dict[str, str] = {
    "qwen2_vl": QWEN2_VL_TEMPLATE,
    "qwen2_5_vl": QWEN2_VL_TEMPLATE,
    "qwen3_vl": QWEN3_VL_TEMPLATE,
}
"""Chat template of each family, keyed by family name (see :data:`medvl.model.tiny.FAMILIES`)."""
