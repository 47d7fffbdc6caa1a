"""Question-answer `Sample`s about phantom cases, and whole phantom datasets on disk.

Every case yields samples of every answer type, all answered from the exact ground truth:

* ``choice``: the grade of a finding (options: the four grades 0-3), and where the most severe
  localisable finding is (options: the four places it can take in that anatomy);
* ``closed``: two per case, one answered yes and one no (presence of a finding, or laterality /
  heart size when every finding is present or every one absent);
* ``open``: which abnormalities are present;
* ``grounding``: the box of the most severe finding, or of a landmark in a normal case;
* ``severity``: a finding's grade 0-3 (fundus: the DR grade 0-4).

Answers are balanced by construction so that a blind guess scores chance: the correct option
letter goes to the letter used least so far (over the whole set, then within its question
family); each case asks one yes and one no question, about the finding whose yes/no counts are
furthest behind; and the finding to grade is the one whose grade was asked least for it, so
"absent" (half of all findings) is not a safe guess either.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

from medvl.data.balance import LETTERS, AnswerBalancer
from medvl.data.manifest import write_manifest
from medvl.data.sample import Sample
from medvl.scans.phantoms import PhantomCase, make_and_write, phantom_jobs
from medvl.scans.phantoms.fundus import DR_GRADES
from medvl.scans.phantoms.vocab import LOCATIONS, NAMES, SEEN, presence_question, verb
from medvl.scans.phantoms.writers import LAYOUT

__all__ = [
    "case_samples",
    "generate_phantom_dataset",
    "phantom_samples",
]

SOURCE = "medvl-phantoms"
GRADE_WORDS = ("absent (grade 0)", "mild (grade 1)", "moderate (grade 2)", "severe (grade 3)")
TEXT = {
    "knee": ("knee MRI", "the distal femur, proximal tibia, patella, articular cartilage, "
             "menisci and cruciate ligaments are in view"),
    "fundus": ("fundus photograph", "the optic disc, macula and vascular arcades are in view"),
    "chest": ("chest X-ray", "both lungs, the heart, mediastinum, ribs and diaphragm are in view"),
}  # fmt: skip


def _box_text(box) -> str:
    return json.dumps([round(v, 3) for v in box])


def _closed_pool(case: PhantomCase) -> dict[str, tuple[str, str]]:
    """Question key -> (question, answer) for every yes/no question the case can answer."""
    kind = TEXT[case.anatomy][0]
    pool = {
        f.name: (f"{presence_question(f.name)} on this {kind}?", "yes" if f.present else "no")
        for f in case.findings
    }
    if case.anatomy == "chest":
        ctr = case.measurements["cardiothoracic_ratio"]
        pool["ctr"] = ("Is the cardiothoracic ratio below 0.5?", "yes" if ctr < 0.5 else "no")
    else:
        organ = "knee" if case.anatomy == "knee" else "eye"
        for side in ("right", "left"):
            answer = "yes" if case.laterality == side else "no"
            pool[side] = (f"Is this {kind} of a {side} {organ}?", answer)
    if case.anatomy == "fundus":
        pool["referable"] = (
            "Is there referable diabetic retinopathy (moderate or worse)?",
            "yes" if case.grade >= 2 else "no",
        )
    return pool


def _steps(case: PhantomCase, observation: str, conclusion: str) -> list[str]:
    kind, anatomy = TEXT[case.anatomy]
    side = f" of a {case.laterality} {case.anatomy}" if case.anatomy == "knee" else ""
    eye = f" of a {case.laterality} eye" if case.anatomy == "fundus" else ""
    return [
        f"Modality: this is a {case.description}{side}{eye}.",
        f"Anatomy: {anatomy}.",
        f"Observation: {observation}.",
        f"Conclusion: {conclusion}.",
    ]


def _seen(case: PhantomCase, name: str) -> str:
    f = case.finding(name)
    if not f.present:
        return f"no {NAMES[name]} {verb(name)} seen"
    text = SEEN[name].format(loc=f.location)
    if name == "cardiomegaly":
        text += f", cardiothoracic ratio {case.measurements['cardiothoracic_ratio']:.2f}"
    elif f.size_mm and name not in ("microaneurysms", "drusen", "haemorrhages"):
        text += f", about {f.size_mm:.0f} mm across"
    return text


def _choice(balancer, family, question, places, correct, observation, conclusion, case):
    """A 4-option question whose correct option lands on the letter the balancer picks."""
    at = balancer.letter(f"{case.anatomy}-{family}")
    shift = places.index(correct) - at
    return {
        "question": question,
        "options": {LETTERS[k]: places[(k + shift) % 4] for k in range(4)},
        "answer": LETTERS[at],
        "answer_type": "choice",
        "reasoning": _steps(case, observation, conclusion),
    }


def _grade_choice(case: PhantomCase, balancer: AnswerBalancer, asked: str) -> dict:
    grade = GRADE_WORDS[case.finding(asked).severity]
    question = f"How severe {verb(asked)} the {NAMES[asked]}, if any?"
    return _choice(
        balancer,
        "grade",
        question,
        GRADE_WORDS,
        grade,
        _seen(case, asked),
        f"the {NAMES[asked]} {verb(asked)} {grade}",
        case,
    )


def _where_choice(case: PhantomCase, balancer: AnswerBalancer) -> dict | None:
    where = [f for f in case.present if f.name in LOCATIONS]
    if not where:
        return None
    f = where[0]
    return _choice(
        balancer,
        "where",
        f"Where {verb(f.name)} the {NAMES[f.name]}?",
        LOCATIONS[f.name],
        f.location,
        _seen(case, f.name),
        f"the {NAMES[f.name]} {verb(f.name)} in the {f.location}",
        case,
    )


def _closed(case: PhantomCase, balancer: AnswerBalancer, answer: str) -> dict:
    pool = _closed_pool(case)
    key = balancer.closed_pick(answer, [k for k, (_, a) in pool.items() if a == answer])
    names = {f.name for f in case.findings}
    observation = _seen(case, key) if key in names else _closed_observation(case, key)
    return {
        "question": pool[key][0],
        "answer": answer,
        "answer_type": "closed",
        "reasoning": _steps(case, observation, answer),
    }


def _open(case: PhantomCase) -> dict:
    present = [f for f in case.findings if f.present]
    answer = ", ".join(NAMES[f.name] for f in present) or "no abnormality"
    seen = "; ".join(_seen(case, f.name) for f in present)
    seen = seen or f"no abnormality is seen; {TEXT[case.anatomy][1]} and look normal"
    return {
        "question": f"What abnormalities are seen on this {TEXT[case.anatomy][0]}?",
        "answer": answer,
        "answer_type": "open",
        "reasoning": _steps(case, seen, answer),
    }


def _grounding(case: PhantomCase, index: int) -> dict:
    """The most severe finding (with its mask), or a landmark in a normal case."""
    extra = {}
    if case.present:
        f = case.present[0]
        target, box, observation = NAMES[f.name], f.box, _seen(case, f.name)
        extra = {"mask": f"{case.case_id}/{LAYOUT[case.anatomy][1]}", "mask_label": f.mask_label}
    else:
        target = sorted(case.structures)[index % len(case.structures)]
        box, observation = case.structures[target], f"no abnormality; the {target} is identified"
    # The answer's box format is the model's prompt's business (medvl.model.prompts): each
    # family writes boxes its own way.
    question = f"Locate the {target} on this {TEXT[case.anatomy][0]}."
    conclusion = f"the {target} lies in {_box_text(box)}"
    return {
        "question": question,
        "answer": _box_text(box),
        "answer_type": "grounding",
        "box": list(box),
        "target": target,
        **extra,
        "reasoning": _steps(case, observation, conclusion),
    }


def _severity(case: PhantomCase, asked: str) -> dict:
    if case.anatomy == "fundus":  # the case-level grade: ICDR 0-4
        question, severity = "What is the ICDR diabetic retinopathy grade (0-4)?", case.grade
        observation = _dr_observation(case)
    else:
        severity = case.finding(asked).severity
        question = f"Grade the {NAMES[asked]} from 0 (absent) to 3 (severe)."
        observation = _seen(case, asked)
    return {
        "question": question,
        "answer": str(severity),
        "answer_type": "severity",
        "severity": severity,
        "reasoning": _steps(case, observation, f"grade {severity}"),
    }


def case_samples(
    case: PhantomCase,
    balancer: AnswerBalancer,
    index: int = 0,
    split: str = "train",
    source: str = SOURCE,
) -> list[Sample]:
    """The samples of one case (6 or 7), with paths relative to the dataset folder.

    Args:
        case: A phantom case; its files are expected at ``<case_id>/`` (see ``write_case``).
        balancer: Shared by every case of the set, in order.
        index: Position of the case among those of its kind: breaks ties in which finding is
            graded and alternates whether the yes or the no question comes first.
        split: Split of every sample of the case.
        source: The samples' ``source``.

    Returns:
        Samples with ids ``<case_id>-<tag>``; extra keys (kept in ``meta``): ``case``,
        ``truth`` (the case's truth.json), and for grounding ``target`` and ``mask_label``
        (the value of the target's voxels in ``mask``).
    """
    base = {
        "image": f"{case.case_id}/{LAYOUT[case.anatomy][0]}",
        "modality": case.modality,
        "anatomy": case.anatomy,
        "split": split,
        "source": source,
        "case": case.case_id,
        "truth": f"{case.case_id}/truth.json",
    }
    asked = balancer.graded(f"{case.anatomy}-choice", case.findings, index).name
    others = [f for f in case.findings if f.name != asked]
    graded = balancer.graded(f"{case.anatomy}-severity", others, index).name
    answers = ("yes", "no") if index % 2 == 0 else ("no", "yes")
    records = {
        "choice-grade": _grade_choice(case, balancer, asked),
        "choice-where": _where_choice(case, balancer),
        "closed-0": _closed(case, balancer, answers[0]),
        "closed-1": _closed(case, balancer, answers[1]),
        "open": _open(case),
        "grounding": _grounding(case, index),
        "severity": _severity(case, graded),
    }
    return [
        Sample.from_dict({"id": f"{case.case_id}-{tag}", **base, **fields})
        for tag, fields in records.items()
        if fields is not None
    ]


def _dr_observation(case: PhantomCase) -> str:
    dr = [f.name for f in case.findings if f.present and f.name != "drusen"]
    if dr:
        lesions = "; ".join(_seen(case, name) for name in dr)
    else:
        lesions = "no microaneurysms, haemorrhages, exudates or new vessels are seen"
    return f"{lesions}; this is consistent with {DR_GRADES[case.grade]}"


def _closed_observation(case: PhantomCase, key: str) -> str:
    if key == "ctr":
        return f"the cardiothoracic ratio is {case.measurements['cardiothoracic_ratio']:.2f}"
    if key == "referable":
        return _dr_observation(case)
    if case.anatomy == "knee":
        medial = "left" if case.laterality == "right" else "right"
        return (
            f"the medial compartment lies towards the patient's {medial}, so this is a "
            f"{case.laterality} knee"
        )
    disc = "right" if case.laterality == "right" else "left"
    return f"the optic disc is on the {disc} of the image, so this is a {case.laterality} eye"


def _split(index: int) -> str:
    return "test" if index % 10 == 9 else "val" if index % 10 == 8 else "train"


def phantom_samples(cases: Iterable[PhantomCase], source: str = SOURCE) -> Iterator[Sample]:
    """Samples of a sequence of cases with one shared `AnswerBalancer`.

    Cases are counted per kind: the i-th case of a kind goes to split ``test`` when
    ``i % 10 == 9``, ``val`` when ``i % 10 == 8``, else ``train``.
    """
    balancer = AnswerBalancer()
    seen: Counter[str] = Counter()
    for case in cases:
        i = seen[case.anatomy]
        seen[case.anatomy] += 1
        yield from case_samples(case, balancer, index=i, split=_split(i), source=source)


def generate_phantom_dataset(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    modalities: Iterable[str] = ("knee", "fundus", "chest"),
    progress: bool = True,
) -> Path:
    """Writes ``n`` phantom cases of each kind and a manifest of their samples.

    Args:
        out_dir: Destination: one folder per case and ``manifest.jsonl``.
        n: Cases per kind.
        seed: Set seed (the same seed gives byte-identical images and manifest).
        modalities: Kinds among ``"knee"``, ``"fundus"``, ``"chest"``.
        progress: Show a tqdm progress bar.

    Returns:
        The manifest's path; it passes ``validate_manifest(path, check_files=True)``.
    """
    out_dir = Path(out_dir)
    jobs = phantom_jobs(n, seed, modalities)
    cases = tqdm(make_and_write(jobs, out_dir), total=len(jobs), desc="phantoms", unit="case",
                 disable=not progress)  # fmt: skip
    return write_manifest(out_dir / "manifest.jsonl", phantom_samples(cases))
