"""The fixed wording of medvl's prompts: system prompts, answer instructions per answer type and
family, and the severity grading scales stated in severity questions.

Kept apart from :mod:`medvl.model.prompts`, which assembles them per sample and reads replies,
so the wording can be read and reviewed on its own; ``medvl.model.prompts`` re-exports every
name here. The grounding instructions must match the box formats of :mod:`medvl.model.grounding`.
"""

from __future__ import annotations

from dataclasses import dataclass

REASONING_SYSTEM = (
    "You are a medical imaging expert answering a question about a medical image. "
    "First think through the question step by step inside <think> </think> tags, "
    "then give the final answer inside <answer> </answer> tags, like this:\n"
    "<think>\nyour reasoning\n</think>\n<answer>your answer</answer>"
)
DIRECT_SYSTEM = (
    "You are a medical imaging expert answering a question about a medical image. "
    "Give only the final answer inside <answer> </answer> tags, with no explanation, "
    "like this:\n<answer>your answer</answer>"
)

CHOICE_INSTRUCTION = "Answer with the letter of the correct option."
CLOSED_INSTRUCTION = "Answer yes or no."
OPEN_INSTRUCTION = "Answer with a short phrase."
SEVERITY_INSTRUCTION = "Answer with a single integer grade"  # + the scale, when known

# Corners as the family writes them; the label is what the question asks to find.
_RELATIVE = "each coordinate an integer from 0 to 1000 relative to the image width and height"
GROUNDING_INSTRUCTIONS = {
    "qwen2_vl": "Give the bounding box as <|box_start|>(x1,y1),(x2,y2)<|box_end|>, the top-left "
    f"and bottom-right corners, {_RELATIVE}.",
    "qwen2_5_vl": 'Give the bounding box in JSON as {"bbox_2d": [x1, y1, x2, y2], "label": '
    '"name"}, the top-left and bottom-right corners in pixels of the image.',
    "qwen3_vl": 'Give the bounding box in JSON as {"bbox_2d": [x1, y1, x2, y2], "label": '
    f'"name"}}, the top-left and bottom-right corners, {_RELATIVE}.',
}
GROUNDING_3D_INSTRUCTION = (
    'Give the 3D bounding box in JSON as {"bbox_3d": [x1, y1, z1, x2, y2, z2]}, two opposite '
    "corners in volume coordinates from 0 to 1 with 3 decimals: x from the patient's left (0) to "
    "right (1), y from posterior to anterior, z from inferior to superior."
)


@dataclass(frozen=True)
class SeverityScale:
    """An integer grading scale, stated in severity prompts."""

    low: int
    high: int
    name: str = ""

    def describe(self) -> str:
        """E.g. ``"from 0 to 3 (MOAKS)"``."""
        return f"from {self.low} to {self.high}" + (f" ({self.name})" if self.name else "")


# (anatomy, modality) -> scale; modality "" matches any. Anatomy and modality are lowercased and
# modality spellings folded ("MR", "MRI" -> "mri"; "X-ray", "CR", "radiograph" -> "x-ray").
SEVERITY_SCALES = {
    ("knee", "mri"): SeverityScale(0, 3, "MOAKS"),
    ("knee", "x-ray"): SeverityScale(0, 4, "Kellgren-Lawrence"),
    ("fundus", ""): SeverityScale(0, 4, "ICDR diabetic retinopathy"),
    ("retina", ""): SeverityScale(0, 4, "ICDR diabetic retinopathy"),
}
