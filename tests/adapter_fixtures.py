"""Writers of tiny dataset folders in each public dataset's real on-disk layout.

Each ``make_*`` function writes a handful of records (some deliberately broken) under
``root`` and returns ``root``; the tests in test_adapters.py know what each holds.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def image_file(path: Path, size: tuple[int, int] = (8, 6), value: int = 128) -> Path:
    """A tiny real image (format from the suffix: .jpg or .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value // 2, 255 - value)).save(path)
    return path


def png_bytes(value: int = 50) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(value: int = 50) -> str:
    return base64.b64encode(png_bytes(value)).decode("ascii")


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# --- VQA-RAD ------------------------------------------------------------------------------


def make_vqa_rad(root: Path) -> Path:
    """4 convertible questions (train 2, test 2) and one whose image is missing."""
    folder = root / "VQA_RAD Image Folder"
    image_file(folder / "synpic100.jpg")
    image_file(folder / "synpic200.jpg")
    base = {"image_case_url": "https://medpix.nlm.nih.gov/case?id=x", "evaluation": "given"}
    records = [
        dict(base, qid=1, image_name="synpic100.jpg", question="Is there a fracture?",
             answer="Yes", answer_type="CLOSED", question_type="PRES",
             image_organ="HEAD", phrase_type="freeform"),
        dict(base, qid=2, image_name="synpic100.jpg", question="Which side is affected?",
             answer="left", answer_type="CLOSED ", question_type="POS",
             image_organ="HEAD", phrase_type="test_freeform"),
        dict(base, qid=3, image_name="synpic200.jpg", question="How many lesions?",
             answer=2, answer_type="OPEN", question_type="COUNT",
             image_organ="CHEST", phrase_type="para"),
        dict(base, qid=4, image_name="synpic200.jpg", question="Is the heart enlarged?",
             answer="NO ", answer_type="CLOSED", question_type="SIZE",
             image_organ="CHEST", phrase_type="test_para"),
        dict(base, qid=5, image_name="synpic999.jpg", question="Is this normal?",
             answer="yes", answer_type="CLOSED", question_type="ABN",
             image_organ="ABD", phrase_type="freeform"),
    ]  # fmt: skip
    write_json(root / "VQA_RAD Dataset Public.json", records)
    return root


# --- SLAKE --------------------------------------------------------------------------------

SLAKE_SIZE = (100, 200)  # width, height of xmlab1/source.jpg


def make_slake(root: Path) -> Path:
    """train: 3 English + 6 Chinese; val: 1 (no mask); test: 1 with a missing image."""
    one = root / "imgs" / "xmlab1"
    image_file(one / "source.jpg", SLAKE_SIZE)
    image_file(one / "mask.png", SLAKE_SIZE, value=0)
    detection = [{"Liver": [10, 20, 30, 40]}, {"Left Lung": [0, 0, 50, 100]},
                 {"Right Lung": [50, 0, 50, 100]}]  # fmt: skip
    write_json(one / "detection.json", detection)
    write_json(one / "question.json", [])
    image_file(root / "imgs" / "xmlab2" / "source.jpg", (64, 64))

    def q(qid, img, question, answer, kind, content, lang="en"):
        return {"img_id": int(img[5:]), "img_name": f"{img}/source.jpg", "question": question,
                "answer": answer, "q_lang": lang, "location": "Abdomen", "modality": "CT",
                "answer_type": kind, "base_type": "vqa", "content_type": content,
                "triple": ["vhead", "_", "_"], "qid": qid}  # fmt: skip

    write_json(root / "train.json", [
        q(1, "xmlab1", "Where is the liver?", "Left", "OPEN", "Position"),
        q(2, "xmlab1", "Does the picture contain liver?", "Yes", "CLOSED", "Organ"),
        q(3, "xmlab1", "图片中包含肝脏吗?", "是", "CLOSED", "Organ", lang="zh"),
        q(4, "xmlab1", "Where is the left lung in this image?", "Right", "OPEN", "Position"),
        # SLAKE's other Chinese yes/no spellings, as released.
        q(7, "xmlab1", "这张图片包含肺吗?", "是的", "CLOSED", "Organ", lang="zh"),
        q(8, "xmlab1", "这是MRI吗?", "不是", "CLOSED", "Modality", lang="zh"),
        q(9, "xmlab1", "图中有肝脏吗?", "有", "CLOSED", "Organ", lang="zh"),
        q(10, "xmlab1", "图中有心脏吗?", "没有", "CLOSED", "Organ", lang="zh"),
        q(11, "xmlab1", "肝脏存在异常吗?", "不存在", "CLOSED", "Abnormality", lang="zh"),
    ])  # fmt: skip
    write_json(root / "validate.json", [q(5, "xmlab2", "What modality is used?", "CT", "OPEN",
                                          "Modality")])  # fmt: skip
    write_json(root / "test.json", [q(6, "xmlab9", "Is this a CT?", "Yes", "CLOSED", "Modality")])
    return root


# --- PathVQA ------------------------------------------------------------------------------


def make_pathvqa(root: Path) -> Path:
    """Original layout: train 2 convertible + 1 missing image, test 1."""
    image_file(root / "images" / "train" / "train_0001.jpg")
    image_file(root / "images" / "test" / "test_0001.jpg")
    train = [
        {"image": "train_0001", "question": "Is this fibrosis?", "answer": "yes"},
        {"image": "train_0001", "question": "What is present?", "answer": "granulomas"},
        {"image": "train_0404", "question": "Is it benign?", "answer": "no"},
    ]
    test = [{"image": "test_0001", "question": "Are nuclei enlarged?", "answer": "no"}]
    for split, records in (("train", train), ("test", test)):
        path = root / "qas" / split / f"{split}_qa.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(records, protocol=2))
    return root


class _Touch:
    """Unpickling this opens (creates) a file: stands for a pickle that runs code."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def make_pathvqa_evil(root: Path, marker: Path) -> Path:
    make_pathvqa(root)
    (root / "qas" / "train" / "train_qa.pkl").write_bytes(pickle.dumps([_Touch(marker)]))
    return root


def make_pathvqa_parquet(root: Path) -> Path:
    """Hugging Face layout: train 2 rows sharing one image, validation 1 row with bad bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = {"bytes": png_bytes(90), "path": None}
    train = pa.Table.from_pylist([
        {"image": image, "question": "Is this necrosis?", "answer": "no"},
        {"image": image, "question": "What stain is used?", "answer": "H&E"},
    ])  # fmt: skip
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(train, root / "data" / "train-00000-of-00001.parquet")
    bad = pa.Table.from_pylist([{"image": {"bytes": b"not an image", "path": None},
                                 "question": "Is it?", "answer": "yes"}])  # fmt: skip
    pq.write_table(bad, root / "data" / "validation-00000-of-00001.parquet")
    return root


# --- OmniMedVQA ---------------------------------------------------------------------------


def make_omnimedvqa(root: Path) -> Path:
    """Open-access: 2 convertible, 1 unmatched answer, 1 missing image; Restricted: 1."""
    image_file(root / "Images" / "Chest CT Scan" / "a.png")
    image_file(root / "Images" / "Chest CT Scan" / "b.png")
    image_file(root / "Images" / "RUS_CHN" / "c.png")

    def rec(qid, image, gt, options, **extra):
        options = options + [""] * (4 - len(options))  # so zip pairs all four letters
        out = {"dataset": "Chest CT Scan", "question_id": qid, "question_type": "Disease Diagnosis",
               "question": "What abnormality is shown?", "gt_answer": gt,
               "image_path": f"Images/Chest CT Scan/{image}"}  # fmt: skip
        out.update({f"option_{k}": v for k, v in zip("ABCD", options, strict=True) if v})
        return {**out, **extra}

    write_json(root / "QA_information" / "Open-access" / "Chest CT Scan.json", [
        rec("ct_0001", "a.png", "Adenocarcinoma", ["Normal", "Squamous cell carcinoma",
            "Adenocarcinoma", "Large cell carcinoma"], modality_type="CT(Computed Tomography)"),
        # One real file spells the key "modality"; its answer differs only in case and period.
        rec("ct_0002", "b.png", "no.", ["Yes", "No"], modality="X-Ray"),
        rec("ct_0003", "a.png", "Pneumonia", ["Normal", "Cancer"], modality_type="CT"),
        rec("ct_0004", "zzz.png", "Normal", ["Normal", "Cancer"], modality_type="CT"),
    ])  # fmt: skip
    restricted = rec("rus_0001", "c.png", "Kidney", ["Liver", "Kidney"], modality_type="US")
    restricted["image_path"] = "Images/RUS_CHN/c.png"
    write_json(root / "QA_information" / "Restricted-access" / "RUS_CHN.json", [restricted])
    return root


# --- PMC-VQA ------------------------------------------------------------------------------

PMC_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C",
              "Choice D", "Answer_label"]  # fmt: skip


def make_pmc_vqa(root: Path) -> Path:
    """v1: train 2 + 1 missing image; test 1 (3 choices); test_clean 1. v2: train_2 1."""
    for name in ("PMC1064097_F1.jpg", "PMC2_F2.jpg", "PMC3_F3.jpg"):
        image_file(root / "images" / name)
    image_file(root / "figures" / "PMC9_F9.jpg")
    write_csv(root / "train.csv", PMC_HEADER, [
        ["PMC1064097_F1.jpg", "What is the uptake pattern in the breast?",
         "Focal uptake pattern", "A:Diffuse uptake pattern", " B:Focal uptake pattern",
         "C:No uptake pattern", "D:Cannot determine from the information given", "B"],
        ["PMC2_F2.jpg", "Which modality was used?", "MRI", " A:MRI", " B:CT", " C:PET",
         " D:Ultrasound", ""],
        ["PMC404_F1.jpg", "Where is the lesion?", "Liver", "A:Liver", "B:Lung", "C:Brain",
         "D:Bone", "A"],
    ])  # fmt: skip
    write_csv(root / "test.csv", PMC_HEADER, [
        ["PMC3_F3.jpg", "What does the arrow show?", "A cyst", "A:A cyst", "B:A tumour",
         "C:Normal tissue", "", "A"],
    ])  # fmt: skip
    write_csv(root / "test_clean.csv", PMC_HEADER, [
        ["PMC3_F3.jpg", "What does the arrow show?", "A cyst", "A:A cyst", "B:A tumour",
         "C:Normal tissue", "", "A"],
    ])  # fmt: skip
    # Version 2 as released: no Answer_label, the letter in Answer, a caption and a split.
    write_csv(root / "train_2.csv", ["index", "Figure_path", "Caption", "Question", "Choice A",
                                      "Choice B", "Choice C", "Choice D", "Answer", "split"], [
        ["0", "PMC9_F9.jpg", "Axial T2 image.", "What is shown?", "A:Edema", "B:Mass",
         "C:Normal", "D:Fracture", "A", "train"],
        ["1", "PMC9_F9.jpg", "Axial T2 image.", "Which sequence?", " A: T1", " B: T2",
         " C: FLAIR", " D: DWI", "B", "train"],
    ])  # fmt: skip
    return root


# --- 3DReasonKnee -------------------------------------------------------------------------

KNEE_COLUMNS = ["patient_id", "time", "study_folder", "series_folder", "knee_side",
                "image_filepath", "label_filepath"]  # fmt: skip
BML = "patella medial BML"
BML_GRADES = {"Size of BML (including cyst)": 2, "Number of BML within subregion": 1,
              "% of lesion that is BML (excluding cyst)": 0}  # fmt: skip


def nifti(path: Path, shape: tuple[int, int, int] = (6, 5, 4)) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def make_reasonknee(root: Path) -> Path:
    """train: volume A (both questions graded, label present); test: volume B (question 1
    graded, question 2 not; its path is a cluster path found through image_root)."""
    nifti(root / "volumes" / "9000099_v00_RIGHT.nii.gz")
    nifti(root / "volumes" / "9000099_v00_RIGHT_label.nii.gz")
    nifti(root / "oai" / "9000296_v01_LEFT.nii.gz")
    data = root / "data"
    write_csv(data / "split_files" / "train_split.csv", KNEE_COLUMNS, [
        ["9000099", "v00", "s1", "ser1", "RIGHT", "volumes/9000099_v00_RIGHT.nii.gz",
         "volumes/9000099_v00_RIGHT_label.nii.gz"],
    ])  # fmt: skip
    write_csv(data / "split_files" / "test_split.csv", KNEE_COLUMNS, [
        ["9000296", "v01", "s2", "ser3", "LEFT", "/cluster/oai/9000296_v01_LEFT.nii.gz",
         "/cluster/oai/labels/9000296_v01_LEFT_label.nii.gz"],
    ])  # fmt: skip
    write_json(data / "question_files" / "questions_nobbox_guided.json", {
        "1": f'Grade the {BML}. The output format should be a JSON object: '
             f'{{"MOAKS_scores": {{"{BML}": {{...}}}}}}',
        "2": 'Grade the effusion-synovitis. The output format should be a JSON object: '
             '{"MOAKS_scores": {"effusion-synovitis": {"Grade": (0-3)}}}',
        # The other released shapes (question ids as in questions_nobbox_guided.json).
        "44": 'The output format should be a JSON object with the MOAKS grade: '
              '{"MOAKS_scores": {"Effusion-synovitis": (grade from 0-3)}}',
        "45": 'The output format should be a JSON object with the MOAKS grade: '
              '{"MOAKS_grade": {"Hoffa-synovitis": (grade from 0-3)}}',
        "51": 'The output format should be a JSON object with the MOAKS grade: '
              '{"MOAKS_grade": {"medial meniscus anterior horn": {"morphology": '
              '(grade from 0-8)}}}',
        "33": 'Represent the MOAKS grade in this format: {"patella osteophyte": {"grade": '
              '(grade from 0-3)}}',
        "56": 'The output format should be a JSON object with the hypertrophy presence: '
              '{"medial_meniscal_hypertrophy": {"presence": (0 | 1)}}',
        "58": 'Provide your reasoning and ... {"medial_meniscal_root_tear_bbox": [start_slice, '
              'end_slice, x_min, x_max, y_min, y_max], "medial_meniscal_root_tear": '
              '{"presence": (0 | 1)}}',
        "60": 'The output format should be a JSON object with the assessment: {"ACL": '
              '{"Complete Tear": (0 | 1), "Partial Tear": (0 | 1), "ACL Repair": (0 | 1)}}',
    })  # fmt: skip
    write_json(data / "answer_files" / "answers.json", {
        "9000099_v00_s1_ser1_RIGHT_1": {"MOAKS_scores": {BML: BML_GRADES},
                                        "reasoning": ["Find the patella.", "Grade the BML."],
                                        "bbox": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
        "9000099_v00_s1_ser1_RIGHT_2": {"effusion-synovitis": {"Grade": 1}},
        "9000099_v00_s1_ser1_RIGHT_44": {"MOAKS_scores": {"Effusion-synovitis": 2}},
        "9000099_v00_s1_ser1_RIGHT_45": {"MOAKS_grade": {"Hoffa-synovitis": 1}},
        "9000099_v00_s1_ser1_RIGHT_51": {"MOAKS_grade": {"medial meniscus anterior horn":
                                                         {"morphology": 6}}},
        "9000099_v00_s1_ser1_RIGHT_33": {"patella osteophyte": {"grade": 3}},
        "9000099_v00_s1_ser1_RIGHT_56": {"medial_meniscal_hypertrophy": {"presence": 1}},
        "9000099_v00_s1_ser1_RIGHT_58": {"medial_meniscal_root_tear_bbox": [40, 52, 10, 30, 60, 80],
                                         "medial_meniscal_root_tear": {"presence": 0}},
        "9000099_v00_s1_ser1_RIGHT_60": {"ACL": {"Complete Tear": 0, "Partial Tear": 1,
                                                 "ACL Repair": 0}},
        "9000296_v01_s2_ser3_LEFT_1": {"MOAKS_scores": {BML: BML_GRADES},
                                       "bbox": [3, 4, 5, 6, 7, 8]},
    })  # fmt: skip
    return root


# --- MM-Retinal-Reason --------------------------------------------------------------------


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def make_mm_retinal_reason(root: Path) -> Path:
    """basic: single, multi, true/false, messages-style, bad image; complex: 1 (2 images);
    test file: 1 record whose image comes from the base64 CSV table."""
    write_json(root / "basic_reasoning.json", [
        {"image": [png_base64(10)], "reason": "Yellow deposits at the macula.",
         "conversations": _conversation(
             "<image>\nWhat is seen in this fundus photograph? A. drusen B. exudate C. normal",
             "A")},
        {"image": [png_base64(20)],
         "conversations": _conversation(
             "<image>\nWhich findings are present?\nA. haemorrhage\nB. cotton wool spots\n"
             "C. normal disc\nD. microaneurysms\nSelect all that apply.",
             "<think>Red dots and white patches.</think><answer>D, B</answer>")},
        {"image": png_base64(10),
         "conversations": _conversation("<image>\nIs the optic disc swollen? True or false.",
                                        "False")},
        {"image": [png_base64(10)],
         "messages": [{"role": "user", "content": [{"type": "image"},
                                                   {"type": "text", "text": "What disease?"}]},
                      {"role": "assistant", "content": "Retinitis pigmentosa"}]},
        {"image": ["bm90IGFuIGltYWdlIGF0IGFsbCwganVzdCB0ZXh0"],
         "conversations": _conversation("<image>\nWhat is it?", "Nothing")},
    ])  # fmt: skip
    write_json(root / "complex_reasoning.json", [
        {"pmcid": "PMC123", "title": "A case", "caption": "Figure 1: fundus and OCT.",
         "image": [png_base64(30), png_base64(40)], "reason": "The history points to uveitis.",
         "conversations": _conversation("A 20-year-old man presented with blurred vision...",
                                        "<answer>Multiple evanescent white dot syndrome</answer>")},
    ])  # fmt: skip
    write_json(root / "single_choice_test_data_CFP.json", [
        {"image": ["img_001.jpg"],
         "conversations": _conversation("What is the diagnosis? A. glaucoma B. normal", "B")},
    ])  # fmt: skip
    write_csv(root / "single_choice_test_data_CFP.csv", ["", "base64"],
              [["img_001.jpg", png_base64(60)]])  # fmt: skip
    return root
