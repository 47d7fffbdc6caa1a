"""MedVLM on every tiny family: answering 2D and 3D phantoms, reading replies into scan
coordinates, grounding heads, SFT batches, losses and gradients, checkpoints, batching, streaming.

The tiny models are random, so their replies are noise: the tests check the plumbing. Replies
that matter are written by hand (``build_target``) and read through ``parse_answer``, the code
path ``MedVLM.answer`` uses, with the processor's real resized sizes.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from PIL import Image

from medvl.data.dataset import DatasetConfig, MedVLDataset
from medvl.data.phantom_samples import generate_phantom_dataset
from medvl.model import FAMILIES, Answer, MedVLM, Question, parse_answer
from medvl.model.encoding import encode_example
from medvl.model.grounding import format_box, resized_image_size
from medvl.model.prompts import build_target
from medvl.scans import load_scan
from medvl.scans.phantoms import make_chest_case, make_fundus_case, make_knee_case, write_case

N_FRAMES = 4  # frames of a volume: enough for the plumbing, cheap on a CPU
MAX_NEW = 8


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Phantom cases written to disk and loaded back as MetaTensors (paths kept)."""
    folder = tmp_path_factory.mktemp("phantoms")
    out = {}
    for case in (make_knee_case(0), make_chest_case(0), make_fundus_case(0)):
        paths = write_case(case, folder)
        path = paths["nifti"] if case.anatomy == "knee" else paths["png"]
        out[case.anatomy] = {"case": case, "path": path, "scan": load_scan(path)}
    return out


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    """Dataset items (frames view) of one knee and one fundus case: grounding and choice."""
    manifest = generate_phantom_dataset(
        tmp_path_factory.mktemp("ds"), 1, modalities=("knee", "fundus"), progress=False
    )
    ds = MedVLDataset(manifest, DatasetConfig(view="frames", n_frames=N_FRAMES))
    chosen = [i for i, s in enumerate(ds.samples) if s.answer_type == "grounding"]
    chosen.append(next(i for i, s in enumerate(ds.samples) if s.answer_type == "choice"))
    return [ds[i] for i in chosen]  # knee grounding, fundus grounding, knee choice


def _scramble(vlm: MedVLM, seed: int = 0) -> MedVLM:
    """Add noise to the LM so greedy replies vary (a fresh tiny model repeats one token)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vlm.model.named_parameters():
            if "language_model" in name or "lm_head" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return vlm


def _randomise_heads(vlm: MedVLM, seed: int = 1) -> None:
    """Heads start with zero last layers (constant outputs); make outputs input-dependent."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vlm.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


@pytest.fixture(scope="module", params=FAMILIES)
def plain(request, tiny_model_path):
    """A scrambled tiny model of each family, no heads, no LoRA."""
    return _scramble(MedVLM.from_pretrained(tiny_model_path(request.param)))


@pytest.fixture(scope="module", params=FAMILIES)
def grounded(request, tiny_model_path):
    """A tiny model of each family with box (2D + 3D) and mask heads and LoRA."""
    return MedVLM.from_pretrained(
        tiny_model_path(request.param), lora={"r": 4}, heads=["box", "mask"]
    )


def _valid_box(box, n: int) -> bool:
    d = n // 2
    return (
        isinstance(box, list)
        and len(box) == n
        and all(0.0 <= v <= 1.0 for v in box)
        and all(box[i] <= box[i + d] for i in range(d))
    )


def _close(a, b, tol: float) -> bool:
    return a is not None and all(math.isclose(x, y, abs_tol=tol) for x, y in zip(a, b, strict=True))


# -- answering ------------------------------------------------------------------------------


def test_answer_on_2d_and_3d_phantoms_is_typed_right(plain, cases):
    for anatomy, n in (("chest", 4), ("knee", 6)):
        scan = cases[anatomy]["scan"]
        ans = plain.answer(Question(scan, "Where is the lesion?", answer_type="grounding"),
                           max_new_tokens=MAX_NEW, n_frames=N_FRAMES)  # fmt: skip
        assert isinstance(ans, Answer) and isinstance(ans.raw, str) and ans.raw
        assert ans.reasoning is None or isinstance(ans.reasoning, str)
        assert ans.answer is None or isinstance(ans.answer, str)
        assert ans.box is None or _valid_box(ans.box, n)
        assert ans.mask is None and ans.box_source in (None, "text")
        # A path is read with load_scan: the same scan, the same greedy reply.
        by_path = plain.answer(
            Question(cases[anatomy]["path"], "Where is the lesion?", answer_type="grounding"),
            max_new_tokens=MAX_NEW, n_frames=N_FRAMES,
        )  # fmt: skip
        assert by_path.raw == ans.raw
    image = Image.fromarray(cases["fundus"]["case"].image.transpose(2, 1, 0))  # (W, H, C) -> PIL
    ans = plain.answer(Question(image, "Grade?", options={"A": "0", "B": "1"}),
                       max_new_tokens=MAX_NEW)  # fmt: skip
    assert isinstance(ans.raw, str)


def test_reply_text_is_read_into_scan_coordinates(plain, cases):
    family, processor = plain.family, plain.processor
    # 2D: the family's native box on the *resized* image comes back as the scan's box.
    heart = cases["chest"]["case"].structures["heart"]
    enc = plain.encode_question(
        Question(cases["chest"]["scan"], "Where is the heart?", answer_type="grounding")
    )
    resized = resized_image_size(processor, 256, 256)
    assert enc.context.image_size == resized != (256, 256) or family == "qwen3_vl"
    sample = {"question": "q", "answer_type": "grounding", "answer": "-", "box": heart,
              "reasoning": ["the heart is", "left of centre"]}  # fmt: skip
    reply = build_target(sample, family, image_size=enc.context.image_size)
    ans = parse_answer(reply, family, enc.context)
    assert ans.reasoning == "the heart is\nleft of centre" and ans.well_formed
    assert ans.answer.startswith(("{", "<|box_start|>")) and ans.box_source == "text"
    step = max(1e-3, 1 / min(enc.context.image_size))
    assert _close(ans.box, heart, step)

    # 3D, bbox_3d: volume coordinates whatever the family.
    femur = cases["knee"]["case"].structures["femur"]
    knee = cases["knee"]["scan"]
    enc = plain.encode_question(Question(knee, "Where is the femur?", answer_type="grounding"),
                                n_frames=N_FRAMES)  # fmt: skip
    reply = build_target({**sample, "box": femur, "reasoning": None}, family)
    assert '"bbox_3d"' in reply
    assert _close(parse_answer(reply, family, enc.context).box, femur, 1e-3)

    # 3D, one native 2D box per frame: back through the view's coordinate map.
    view, size = enc.context.view, enc.context.image_size
    assert size == tuple(s * processor.video_processor.patch_size
                         for s in enc.inputs["video_grid_thw"][0, [2, 1]].tolist())  # fmt: skip
    frames = view.frame_boxes(femur)
    reply = "<answer>" + "\n".join(
        f"frame {f}: {format_box(b, family, size)}" for f, b in frames.items()
    ) + "</answer>"  # fmt: skip
    expected = view.box_from_frames(frames)
    assert _close(parse_answer(reply, family, enc.context).box, expected, 1 / min(size) + 1e-3)
    assert parse_answer("no box here", family, enc.context).box is None


def test_heads_give_the_box_and_mask_of_a_grounding_question(grounded, cases):
    for anatomy, n in (("chest", 4), ("knee", 6)):
        scan = cases[anatomy]["scan"]
        ans = grounded.answer(Question(scan, "Where is the lesion?", answer_type="grounding"),
                              max_new_tokens=MAX_NEW, n_frames=N_FRAMES)  # fmt: skip
        assert ans.box_source == "head" and _valid_box(ans.box, n)
        assert ans.mask is not None and ans.mask.dtype == torch.bool
        assert tuple(ans.mask.shape) == tuple(scan.shape[1:])


# -- training -------------------------------------------------------------------------------


def test_collate_labels_only_the_assistant_turn(grounded, items):
    batch = grounded.collate(items)
    tok, processor, family = grounded.tokenizer, grounded.processor, grounded.family
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for row, item in enumerate(items):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        length = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row, :length].all()  # right padding
        kept = (labels != -100).nonzero()[:, 0]
        start, end = int(kept[0]), int(kept[-1]) + 1
        assert end == length and len(kept) == end - start  # one run, to the last real token
        assert (labels[start:end] == ids[start:end]).all()

        # The prompt is the one answering uses; the labelled text is the target + <|im_end|>.
        prompt = encode_example(processor, family, item, grounded.config.prompt)
        assert torch.equal(ids[:start], prompt.inputs["input_ids"][0])
        sample = item["sample"].to_dict() | {"box": item["box"], "meta": item["sample"].meta}
        if sample["answer_type"] == "grounding" and len(item["box"]) == 4:
            w, h = item["messages"][0]["content"][0]["image"].size
            size = resized_image_size(processor, w, h)
        else:
            size = None
        target = build_target(sample, family, image_size=size)
        if sample["answer_type"] == "grounding":  # box and mask targets: head tokens first
            target = target.replace("<answer>", "<answer><|box|><|seg|>")
            assert int(batch["box_dims"][row]) == len(item["box"]) // 2
            assert batch["box_targets"][row, : len(item["box"])].tolist() == pytest.approx(
                item["box"]
            )
            mask = batch["mask_targets"][row]
            assert mask.shape[0] == (N_FRAMES if len(item["box"]) == 6 else 1) and mask.any()
        else:
            assert int(batch["box_dims"][row]) == 0 and batch["mask_targets"][row] is None
        assert tok.decode(ids[start:end]) == target + "<|im_end|>"


def test_collate_takes_a_sample_with_a_loaded_scan(plain, cases):
    from medvl.data import Sample

    chest = cases["chest"]
    sample = Sample.from_dict({
        "id": "c1", "image": str(chest["path"]), "modality": "X-ray", "anatomy": "chest",
        "question": "Where is the heart?", "answer": "heart", "answer_type": "grounding",
        "box": chest["case"].structures["heart"], "reasoning": ["it is there"],
    })  # fmt: skip
    batch = plain.collate([{"sample": sample, "scan": chest["scan"]}])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    size = resized_image_size(plain.processor, *chest["scan"].shape[1:])
    target = build_target(sample, plain.family, image_size=size)
    assert plain.tokenizer.decode(ids[labels != -100]) == target + "<|im_end|>"
    assert "box_targets" not in batch  # no heads, no head targets


def test_forward_loss_and_gradients_with_lora(tiny_model_path, items):
    grounded = MedVLM.from_pretrained(
        tiny_model_path("qwen2_5_vl"), lora={"r": 4}, heads=["box", "mask"]
    )
    grounded.train()
    try:
        grounded.zero_grad()
        out = grounded(**grounded.collate(items))
        assert torch.isfinite(out.loss)
        for part in (out.lm_loss, out.box_loss, out.mask_loss):
            assert part is not None and torch.isfinite(part)
        cfg = grounded.config
        expected = out.lm_loss + cfg.box_loss_weight * out.box_loss + \
            cfg.mask_loss_weight * out.mask_loss  # fmt: skip
        assert torch.allclose(out.loss, expected)
        out.loss.backward()
    finally:
        grounded.eval()
    trainable = {n for n, p in grounded.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in grounded.named_parameters() if p.grad is not None}
    assert with_grad == trainable and trainable == {
        n for n, _ in grounded.named_parameters()
        if "lora_" in n or "trainable_tokens" in n or n.startswith("heads.")
    }  # fmt: skip
    for head in grounded.heads.values():  # zero-initialised last layers: only they move first
        assert any(p.grad.abs().sum() > 0 for p in head.parameters())
    assert any("trainable_tokens" in n for n in trainable)
    assert len(grounded.trainable_parameters()) == len(trainable)


def test_full_fine_tuning_trains_everything(tiny_model_path, items):
    plain = MedVLM.from_pretrained(tiny_model_path("qwen3_vl"))
    batch = plain.collate(items)
    assert "box_targets" not in batch and "mask_targets" not in batch
    out = plain(**batch)
    assert torch.isfinite(out.loss) and out.box_loss is None and out.mask_loss is None
    assert len(plain.trainable_parameters()) == len(list(plain.parameters()))


# -- checkpoints ----------------------------------------------------------------------------


def _outputs(vlm: MedVLM, batch: dict) -> tuple:
    with torch.no_grad():
        out = vlm(**batch)
    return out.logits, out.boxes, out.mask_logits


def _same(a: tuple, b: tuple) -> bool:
    logits_a, boxes_a, masks_a = a
    logits_b, boxes_b, masks_b = b
    pairs = zip(masks_a or [], masks_b or [], strict=True)
    masks = all((x is None and y is None) or torch.equal(x, y) for x, y in pairs)
    return torch.equal(logits_a, logits_b) and torch.equal(boxes_a, boxes_b) and masks


def test_save_and_load_give_identical_outputs(tiny_model_path, items, tmp_path):
    vlm = MedVLM.from_pretrained(tiny_model_path("qwen2_vl"), heads=["box", "mask"])
    _randomise_heads(vlm)
    batch = vlm.collate(items)
    before = _outputs(vlm, batch)
    folder = vlm.save_pretrained(tmp_path / "ckpt")
    names = set(os.listdir(folder))
    assert {"model.safetensors", "heads.safetensors", "medvl_config.json"} <= names
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left
    loaded = MedVLM.from_pretrained(folder)
    assert loaded.heads_config == vlm.heads_config and loaded.family == vlm.family
    # A full checkpoint is the base of whatever is built on it next (e.g. a new adapter).
    assert loaded.config.base_model == str(folder.resolve())
    assert _same(before, _outputs(loaded, loaded.collate(items)))
    # Saving into the folder again leaves the same files and the same model.
    assert loaded.save_pretrained(folder) == folder
    assert set(os.listdir(folder)) == names
    assert _same(before, _outputs(MedVLM.from_pretrained(folder), batch))


def test_lora_adapter_round_trips(tiny_model_path, items, tmp_path):
    vlm = MedVLM.from_pretrained(tiny_model_path("qwen3_vl"), lora={"r": 4}, heads=["box"])
    _randomise_heads(vlm)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():  # a trained-looking adapter: B (zero at init) and the token rows
        for name, p in vlm.model.named_parameters():
            if "lora_B" in name or "trainable_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    batch = vlm.collate(items)
    before = _outputs(vlm, batch)
    staging = tmp_path / "staging"  # a trainer's folder that already holds its own files
    staging.mkdir()
    (staging / "config.yaml").write_text("lr: 1\n")
    folder = vlm.save_pretrained(staging)
    names = set(os.listdir(folder))
    assert {"adapter_model.safetensors", "adapter_config.json", "heads.safetensors",
            "medvl_config.json", "config.yaml"} <= names  # fmt: skip
    assert "model.safetensors" not in names
    base_size = os.path.getsize(tiny_model_path("qwen3_vl") / "model.safetensors")
    assert os.path.getsize(folder / "adapter_model.safetensors") < base_size / 2
    loaded = MedVLM.from_pretrained(folder)
    assert type(loaded.model).__name__ == "PeftModel"
    assert _same(before, _outputs(loaded, loaded.collate(items)))
    with pytest.raises(ValueError, match="LoRA adapter already"):
        MedVLM.from_pretrained(folder, lora={"r": 2})


# -- batching and streaming -----------------------------------------------------------------


def _questions(cases) -> list[Question]:
    return [
        Question(cases["chest"]["scan"], "Is the heart enlarged?", answer_type="closed"),
        Question(cases["knee"]["scan"], "Where is the effusion?", answer_type="grounding"),
        Question(cases["fundus"]["scan"], "Which grade?", {"A": "0", "B": "1", "C": "2"}),
    ]


def test_answer_batch_equals_single_answers(plain, cases):
    questions = _questions(cases)
    batched = plain.answer_batch(questions, max_new_tokens=MAX_NEW, n_frames=N_FRAMES)
    for q, got in zip(questions, batched, strict=True):
        single = plain.answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES)
        assert got == single
    assert len({a.raw for a in batched}) == 3  # the replies differ: the test is not vacuous


def test_stream_answer_joins_into_the_raw_answer(plain, cases):
    q = _questions(cases)[1]
    pieces = list(plain.stream_answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES))
    raw = plain.answer(q, max_new_tokens=MAX_NEW, n_frames=N_FRAMES).raw
    assert len(pieces) >= 1 and "".join(pieces) == raw


def test_a_question_must_be_a_question(plain, cases):
    with pytest.raises(TypeError, match=r"expected a medvl.model.Question\(scan, text, ...\)"):
        plain.answer(cases["chest"]["scan"], "Is the heart enlarged?")
