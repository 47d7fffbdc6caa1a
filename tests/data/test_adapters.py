"""Dataset adapters: each public layout, written small by adapter_fixtures, to a valid manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from adapter_fixtures import (
    BML,
    BML_GRADES,
    make_mm_retinal_reason,
    make_omnimedvqa,
    make_pathvqa,
    make_pathvqa_evil,
    make_pathvqa_parquet,
    make_pmc_vqa,
    make_reasonknee,
    make_slake,
    make_vqa_rad,
    png_base64,
)

from medvl.data import read_manifest, validate_manifest
from medvl.data.adapters import (
    ADAPTERS,
    AdapterError,
    ConvertReport,
    adapter_for,
    convert_dataset,
    convert_slake,
)
from medvl.data.adapters.mm_retinal_reason import split_options
from medvl.data.adapters.pmc_vqa import strip_choice
from medvl.data.adapters.slake import question_organ, xywh_to_box


def convert(tmp_path: Path, name: str, make, split=None, **options):
    """Writes the fixture, converts it into out/<name>.jsonl, checks the manifest is valid
    with every file present, and returns (samples by id, report)."""
    src = make(tmp_path / "src")
    out = tmp_path / "out" / f"{name}.jsonl"
    report = convert_dataset(name, src, out, split=split, **options)
    check = validate_manifest(out, check_files=True)
    assert check.ok, check.summary()
    samples = {s.id: s for s in read_manifest(out)}
    assert report.written == len(samples)
    return samples, report


def test_vqa_rad(tmp_path):
    samples, report = convert(tmp_path, "vqa_rad", make_vqa_rad)
    assert set(samples) == {"vqa-rad-1", "vqa-rad-2", "vqa-rad-3", "vqa-rad-4"}
    one, two, three, four = (samples[f"vqa-rad-{i}"] for i in range(1, 5))
    assert (one.answer_type, one.answer, one.split) == ("closed", "yes", "train")
    assert one.anatomy == "head"
    # CLOSED but not yes/no -> open, answer kept; the raw type survives in meta.
    assert (two.answer_type, two.answer, two.split) == ("open", "left", "test")
    assert two.meta["orig_answer_type"] == "CLOSED "
    assert (three.answer_type, three.answer) == ("open", "2")  # a numeric answer
    assert (four.answer_type, four.answer, four.split) == ("closed", "no", "test")
    assert one.image == "../src/VQA_RAD Image Folder/synpic100.jpg"
    assert one.source == "VQA-RAD" and one.meta["question_type"] == "PRES"
    assert report.skipped == {"image file not found": 1}
    assert report.counts["split"] == {"train": 2, "test": 2}


def test_vqa_rad_split(tmp_path):
    samples, _ = convert(tmp_path, "vqa-rad", make_vqa_rad, split="test")
    assert set(samples) == {"vqa-rad-2", "vqa-rad-4"}


def test_slake_boxes_masks_and_language(tmp_path):
    samples, report = convert(tmp_path, "slake", make_slake)
    assert set(samples) == {"slake-train-1", "slake-train-2", "slake-train-4", "slake-val-5"}
    where_liver = samples["slake-train-1"]
    # detection.json [10, 20, 30, 40] (x, y, w, h) on a 100 x 200 image, exactly.
    assert where_liver.box == [0.1, 0.1, 0.4, 0.3]
    assert where_liver.meta["box_organ"] == "Liver"
    assert where_liver.meta["organ_boxes"] == {
        "Liver": [[0.1, 0.1, 0.4, 0.3]],
        "Left Lung": [[0.0, 0.0, 0.5, 0.5]],
        "Right Lung": [[0.5, 0.0, 1.0, 0.5]],
    }
    assert where_liver.mask == "../src/imgs/xmlab1/mask.png"
    assert (where_liver.modality, where_liver.anatomy) == ("CT", "Abdomen")
    assert samples["slake-train-4"].box == [0.0, 0.0, 0.5, 0.5]  # "left lung" is not "lung"
    contains = samples["slake-train-2"]
    assert (contains.answer_type, contains.answer, contains.box) == ("closed", "yes", None)
    val = samples["slake-val-5"]
    assert (val.split, val.answer_type, val.answer, val.mask) == ("val", "open", "CT", None)
    assert report.skipped == {"image file not found": 1}
    assert report.notes == {"mask.png missing, sample kept without a mask": 1}


def test_slake_chinese_kept_on_request(tmp_path):
    samples, _ = convert(tmp_path, "slake", make_slake, split="train", language=None)
    chinese = samples["slake-train-3"]
    assert (chinese.answer_type, chinese.answer, chinese.meta["q_lang"]) == ("closed", "yes", "zh")
    # Every Chinese yes/no spelling of the release is a closed question, not an open one.
    answers = {i: (samples[f"slake-train-{i}"].answer_type, samples[f"slake-train-{i}"].answer)
               for i in (7, 8, 9, 10, 11)}  # fmt: skip
    assert answers == {7: ("closed", "yes"), 8: ("closed", "no"), 9: ("closed", "yes"),
                       10: ("closed", "no"), 11: ("closed", "no")}  # fmt: skip
    assert len(samples) == 9


def test_slake_box_conversion_and_organ_matching():
    assert xywh_to_box([10, 20, 30, 40], width=100, height=200) == [0.1, 0.1, 0.4, 0.3]
    assert xywh_to_box([90, 0, 50, 10], width=100, height=100) == [0.9, 0.0, 1.0, 0.1]  # clipped
    assert xywh_to_box([1, 2, 3], 10, 10) is None
    boxes = {"Lung": [[0, 0, 1, 1]], "Left Lung": [[0, 0, 0.5, 1]], "Liver": [[0, 0, 1, 1]]}
    assert question_organ("Where is the left lung?", boxes) == "Left Lung"
    assert question_organ("Where is the lung?", boxes) == "Lung"
    assert question_organ("Is the liver left of the lung?", boxes) is None  # two organs
    assert question_organ("Where is the abnormality?", boxes) is None


def test_slake_without_boxes(tmp_path):
    samples, _ = convert(tmp_path, "slake", make_slake, boxes=False)
    assert all(s.box is None and "organ_boxes" not in s.meta for s in samples.values())


def test_pathvqa_pickles(tmp_path):
    samples, report = convert(tmp_path, "pathvqa", make_pathvqa)
    assert set(samples) == {"pathvqa-train-0", "pathvqa-train-1", "pathvqa-test-0"}
    assert (samples["pathvqa-train-0"].answer_type, samples["pathvqa-train-0"].answer) == (
        "closed", "yes",
    )  # fmt: skip
    assert samples["pathvqa-train-1"].answer_type == "open"
    assert samples["pathvqa-train-1"].image == "../src/images/train/train_0001.jpg"
    assert samples["pathvqa-test-0"].split == "test"
    assert report.skipped == {"image file not found": 1}


def test_pathvqa_refuses_pickles_that_run_code(tmp_path):
    marker = tmp_path / "pwned"
    src = make_pathvqa_evil(tmp_path / "src", marker)
    with pytest.raises(AdapterError, match="trust_pickle=True"):
        convert_dataset("pathvqa", src, tmp_path / "out.jsonl", split="train")
    assert not marker.exists()
    assert not (tmp_path / "out.jsonl").exists()


def test_pathvqa_parquet_copy(tmp_path):
    samples, report = convert(tmp_path, "pathvqa", make_pathvqa_parquet)
    assert set(samples) == {"pathvqa-train-0", "pathvqa-train-1"}
    assert samples["pathvqa-train-1"].answer == "H&E"
    # One image shared by two questions is written once, next to the manifest.
    images = list((tmp_path / "out" / "images").iterdir())
    assert len(images) == 1 and images[0].suffix == ".png"
    assert samples["pathvqa-train-0"].image == f"images/{images[0].name}"
    assert report.skipped == {"image bytes missing or not an image": 1}


def test_omnimedvqa(tmp_path):
    samples, report = convert(tmp_path, "omnimedvqa", make_omnimedvqa)
    assert set(samples) == {"omnimedvqa-ct_0001", "omnimedvqa-ct_0002", "omnimedvqa-rus_0001"}
    first = samples["omnimedvqa-ct_0001"]
    assert first.answer_type == "choice" and first.answer == "C"
    assert first.options == {"A": "Normal", "B": "Squamous cell carcinoma",
                             "C": "Adenocarcinoma", "D": "Large cell carcinoma"}  # fmt: skip
    assert first.modality == "CT(Computed Tomography)" and first.split == "test"
    assert first.meta["question_type"] == "Disease Diagnosis"
    assert first.meta["access"] == "open" and first.meta["dataset"] == "Chest CT Scan"
    spelled = samples["omnimedvqa-ct_0002"]  # the "modality" spelling, a two-option question
    assert (spelled.modality, spelled.answer) == ("X-Ray", "B")
    assert spelled.options == {"A": "Yes", "B": "No"}
    assert "modality" not in spelled.meta and "orig_modality" not in spelled.meta
    assert samples["omnimedvqa-rus_0001"].meta["access"] == "restricted"
    assert report.skipped == {"gt_answer matches no option (or several)": 1,
                              "image file not found": 1}  # fmt: skip


def test_omnimedvqa_open_access_only(tmp_path):
    samples, _ = convert(tmp_path, "omnimedvqa", make_omnimedvqa, access="open")
    assert "omnimedvqa-rus_0001" not in samples and len(samples) == 2


def test_pmc_vqa(tmp_path):
    samples, report = convert(tmp_path, "pmc_vqa", make_pmc_vqa)
    assert set(samples) == {"pmc-vqa1-train-0", "pmc-vqa1-train-1", "pmc-vqa1-test-0"}
    first = samples["pmc-vqa1-train-0"]
    assert first.options == {"A": "Diffuse uptake pattern", "B": "Focal uptake pattern",
                             "C": "No uptake pattern",
                             "D": "Cannot determine from the information given"}  # fmt: skip
    assert (first.answer_type, first.answer) == ("choice", "B")
    assert first.image == "../src/images/PMC1064097_F1.jpg"
    assert first.meta["answer_text"] == "Focal uptake pattern"
    # No Answer_label: the letter comes from the answer text; " A:MRI" lost its prefix.
    assert samples["pmc-vqa1-train-1"].answer == "A"
    assert samples["pmc-vqa1-train-1"].options["A"] == "MRI"
    assert samples["pmc-vqa1-test-0"].options == {"A": "A cyst", "B": "A tumour",
                                                  "C": "Normal tissue"}  # fmt: skip
    assert report.skipped == {"image file not found": 1}


def test_pmc_vqa_test_clean_and_version_2(tmp_path):
    clean, _ = convert(tmp_path / "a", "pmc_vqa", make_pmc_vqa, split="test_clean")
    assert [s.split for s in clean.values()] == ["test_clean"]
    v2, _ = convert(tmp_path / "b", "pmc-vqa", make_pmc_vqa, version=2)
    assert list(v2) == ["pmc-vqa2-train-0", "pmc-vqa2-train-1"]  # no row lost
    sample = v2["pmc-vqa2-train-0"]
    assert sample.image == "../src/figures/PMC9_F9.jpg" and sample.answer == "A"
    assert v2["pmc-vqa2-train-1"].answer == "B" and v2["pmc-vqa2-train-1"].options["B"] == "T2"
    assert sample.meta["orig_split"] == "train"  # a column named like a field, kept


def test_pmc_vqa_prefix_stripping():
    assert strip_choice("A:Diffuse uptake pattern", "A") == "Diffuse uptake pattern"
    assert strip_choice(" B:Focal uptake pattern", "B") == "Focal uptake pattern"
    assert strip_choice("C: No uptake", "C") == "No uptake"
    assert strip_choice("(D) Bone", "D") == "Bone"
    assert strip_choice("A cyst", "A") == "A cyst"  # a word, not a prefix
    assert strip_choice("B:Lung", "A") == "B:Lung"  # only the column's own letter


def test_reasonknee(tmp_path):
    samples, report = convert(tmp_path, "3dreasonknee", make_reasonknee,
                              image_root=tmp_path / "src" / "oai")  # fmt: skip
    key_a, key_b = "9000099_v00_s1_ser1_RIGHT", "9000296_v01_s2_ser3_LEFT"
    shapes = ("44", "45", "51", "33", "56", "58", "60")
    assert set(samples) == {f"3dreasonknee-{key_a}_1", f"3dreasonknee-{key_a}_2",
                            f"3dreasonknee-{key_b}_1",
                            *(f"3dreasonknee-{key_a}_{q}" for q in shapes)}  # fmt: skip
    shape = {q: samples[f"3dreasonknee-{key_a}_{q}"] for q in shapes}
    # A plain grade under the region, the MOAKS_grade top key, a 0-8 scale, no top key.
    assert (shape["44"].answer_type, shape["44"].severity) == ("severity", 2)
    assert shape["44"].meta["region"] == "Effusion-synovitis"
    assert (shape["45"].severity, shape["45"].meta["region"]) == (1, "Hoffa-synovitis")
    assert (shape["51"].severity, shape["51"].meta["max_grade"]) == (6, 8)
    assert shape["51"].meta["component"] == "morphology"
    assert (shape["33"].severity, shape["33"].meta["region"]) == (3, "patella osteophyte")
    # A presence is a yes/no question; a bbox list of slices is kept apart from the grades.
    assert (shape["56"].answer_type, shape["56"].answer) == ("closed", "yes")
    assert (shape["58"].answer_type, shape["58"].answer) == ("closed", "no")
    assert shape["58"].meta["bbox_slices"] == {
        "medial_meniscal_root_tear_bbox": [40, 52, 10, 30, 60, 80]}  # fmt: skip
    # Several 0/1 assessments: an open JSON answer in the question's own shape.
    assert shape["60"].answer_type == "open"
    assert json.loads(shape["60"].answer) == {"ACL": {"Complete Tear": 0, "Partial Tear": 1,
                                                      "ACL Repair": 0}}  # fmt: skip
    bml = samples[f"3dreasonknee-{key_a}_1"]
    assert bml.answer_type == "open"
    assert json.loads(bml.answer) == {"MOAKS_scores": {BML: BML_GRADES}}
    assert bml.reasoning == ["Find the patella.", "Grade the BML."]
    assert bml.box == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert bml.image == "../src/volumes/9000099_v00_RIGHT.nii.gz"
    assert bml.mask == "../src/volumes/9000099_v00_RIGHT_label.nii.gz"
    assert (bml.modality, bml.anatomy, bml.split) == ("MRI", "knee", "train")
    effusion = samples[f"3dreasonknee-{key_a}_2"]  # one grade -> a severity question
    assert (effusion.answer_type, effusion.severity, effusion.answer) == ("severity", 1, "1")
    moved = samples[f"3dreasonknee-{key_b}_1"]  # a cluster path, found through image_root
    assert moved.image == "../src/oai/9000296_v01_LEFT.nii.gz" and moved.mask is None
    assert moved.box is None and moved.meta["bbox_raw"] == [3, 4, 5, 6, 7, 8]
    # Volume B is graded on question 1 only: 8 of its 9 questions have no grades.
    assert report.skipped == {"no reference grades for this volume and question": 8}
    assert report.notes["label file not found, sample kept without a mask"] == 1


def test_reasonknee_per_component_and_missing_volume(tmp_path):
    samples, report = convert(tmp_path, "3dreasonknee", make_reasonknee, per_component=True)
    # Without image_root the test volume is not found; train gives 3 + 1 + 4 single grades
    # + 3 ACL components as severity questions, and 2 presences as yes/no questions.
    severity = [s for s in samples.values() if s.answer_type == "severity"]
    assert len(samples) == 13 and len(severity) == 11
    grades = sorted((s.meta["component"], s.severity) for s in severity)
    assert grades[0] == ("% of lesion that is BML (excluding cyst)", 0)
    assert all("Give only the grade" in s.question for s in severity)
    assert report.skipped == {"volume file not found": 1}


def test_mm_retinal_reason(tmp_path):
    samples, report = convert(tmp_path, "mm_retinal_reason", make_mm_retinal_reason)
    basic = {i: samples[f"mm-retinal-reason-basic_reasoning-{i}"] for i in range(4)}
    assert (basic[0].answer_type, basic[0].answer) == ("choice", "A")
    assert basic[0].options == {"A": "drusen", "B": "exudate", "C": "normal"}
    assert basic[0].question == "What is seen in this fundus photograph?"
    assert basic[0].reasoning == ["Yellow deposits at the macula."]
    multi = basic[1]  # several right options -> open, letters sorted, options kept
    assert (multi.answer_type, multi.answer, multi.meta["multi_answer"]) == ("open", "B,D", True)
    assert len(multi.options) == 4 and multi.reasoning == ["Red dots and white patches."]
    assert multi.question == "Which findings are present?\nSelect all that apply."
    assert (basic[2].answer_type, basic[2].answer) == ("closed", "no")
    assert (basic[3].answer_type, basic[3].answer) == ("open", "Retinitis pigmentosa")
    assert basic[3].image == basic[0].image == basic[2].image  # same picture, one file
    assert basic[0].image.startswith("images/") and basic[0].split == "basic"
    complex_case = samples["mm-retinal-reason-complex_reasoning-0"]
    assert complex_case.split == "complex" and len(complex_case.image) == 2
    assert complex_case.answer == "Multiple evanescent white dot syndrome"
    assert complex_case.meta["pmcid"] == "PMC123"
    test = samples["mm-retinal-reason-single_choice_test_data_CFP-0"]
    assert (test.split, test.modality, test.answer) == ("test", "fundus", "B")
    assert len(list((tmp_path / "out" / "images").iterdir())) == 5
    assert report.skipped == {"image missing or not decodable": 1}


def test_mm_retinal_reason_split_filter(tmp_path):
    samples, _ = convert(tmp_path, "mm_retinal_reason", make_mm_retinal_reason, split="complex")
    assert list(samples) == ["mm-retinal-reason-complex_reasoning-0"]


def test_mm_retinal_reason_jsonl_and_stray_json(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    record = {"images": [png_base64(70)],
              "messages": [{"role": "user", "content": "Is there papilloedema?"},
                           {"role": "assistant", "content": "<answer>Yes</answer>"}]}  # fmt: skip
    (src / "train_cases.jsonl").write_text(json.dumps(record) + "\n\n")
    (src / "dataset_info.json").write_text('{"name": "not records"}')
    report = convert_dataset("mm-retinal-reason", src, tmp_path / "m.jsonl")
    (sample,) = read_manifest(tmp_path / "m.jsonl", check_files=True)
    assert (sample.split, sample.answer_type, sample.answer) == ("train", "closed", "yes")
    assert report.skipped == {"file is not a JSON list of records": 1}


def test_split_options():
    stem, options = split_options("Which? (A) one (B) two")
    assert (stem, options) == ("Which?", {"A": "one", "B": "two"})
    assert split_options("Is grade A. disease present?") == ("Is grade A. disease present?", None)


WRONG_LAYOUT = {
    "vqa_rad": "VQA_RAD Dataset Public.json",
    "slake": "train.json",
    "pathvqa": "qas/<split>/<split>_qa.pkl",
    "omnimedvqa": "QA_information/Open-access/*.json",
    "pmc_vqa": "train.csv",
    "3dreasonknee": "split_files/<split>_split.csv",
    "mm_retinal_reason": "basic_reasoning.json",
}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_wrong_layout_names_the_expected_file(tmp_path, name):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("not a dataset")
    with pytest.raises(AdapterError) as error:
        convert_dataset(name, tmp_path / "src", tmp_path / "out" / "m.jsonl")
    assert WRONG_LAYOUT[name] in str(error.value) and str(tmp_path / "src") in str(error.value)
    assert not (tmp_path / "out" / "m.jsonl").exists()


def test_unknown_split_format_option_and_folder(tmp_path):
    src = make_slake(tmp_path / "src")
    (src / "validate.json").unlink()
    with pytest.raises(AdapterError, match="'validate.json' or 'validation.json'"):
        convert_dataset("slake", src, tmp_path / "m.jsonl", split="validation")
    with pytest.raises(AdapterError, match="known formats: vqa_rad, slake"):
        convert_dataset("mimic", src, tmp_path / "m.jsonl")
    with pytest.raises(AdapterError, match="unknown option.*colour.*options: boxes, language"):
        convert_dataset("SLAKE", src, tmp_path / "m.jsonl", colour="red")
    with pytest.raises(AdapterError, match="dataset folder not found"):
        convert_dataset("slake", tmp_path / "nowhere", tmp_path / "m.jsonl")
    assert adapter_for("VQA-RAD")[0] == adapter_for("vqarad")[0] == "vqa_rad"


def test_adapter_used_directly_and_report_summary(tmp_path):
    src = make_slake(tmp_path / "src")
    report = ConvertReport("slake", str(src))
    samples = list(convert_slake(src, split="train", report=report))
    assert [s.image for s in samples] == ["imgs/xmlab1/source.jpg"] * 3  # relative to src
    report = convert_dataset("slake", src, tmp_path / "m.jsonl")
    text = report.summary()
    assert text.splitlines()[0] == f"slake: {src} -> {tmp_path / 'm.jsonl'}"
    assert "written 4 samples, skipped 1 records" in text
    assert "split: train 3, val 1" in text
    assert "1  image file not found  (e.g. test.json: record 0 (qid 6): imgs/xmlab9/source.jpg)" \
        in text  # fmt: skip
    assert "notes:" in text and str(report) == text
