"""Model replies judged by hand: (reply, reference, answer type, verdict, question, options).

The forms medical VLMs produce (bare letters, option text, cues, markdown, LaTeX boxes, hedges,
refusals, explanations, statements instead of yes/no, lists in another order, grades in words,
roman numerals, fractions), each with the verdict a careful reader gives: True (right), False
(wrong, a hedge, a refusal or unreadable). `bench/extract_agreement.py` prints how often
`medvl.eval.metrics.answer_correct` agrees; `tests/eval/test_extract.py` keeps it there.
"""

KNEE = {"A": "Meniscal tear", "B": "No tear", "C": "Bone bruise", "D": "Joint effusion"}
GRADE = {"A": "absent (grade 0)", "B": "mild (grade 1)", "C": "moderate (grade 2)",
         "D": "severe (grade 3)"}  # fmt: skip
TEAR = "Is there a meniscal tear?"
ABN = "Is there any abnormality on this chest X-ray?"
NORMAL = "Is this knee MRI normal?"

CHOICE = [
    ("A", "A", True), ("a", "A", True), ("(A)", "A", True), ("A.", "A", True),
    ("**A**", "A", True), ("[A]", "A", True), ("A) Meniscal tear", "A", True),
    ("A. Meniscal tear", "A", True), ("(A) Meniscal tear", "A", True),
    ("Answer: A", "A", True), ("The answer is A.", "A", True), ("the answer is a", "A", True),
    ("Option A", "A", True), ("Choice: (A)", "A", True), ("Meniscal tear", "A", True),
    ("meniscal tear.", "A", True), ("The image shows a meniscal tear.", "A", True),
    ("\\boxed{A}", "A", True), ("Final answer: $\\boxed{A}$", "A", True),
    ("A\nThe posterior horn shows linear signal reaching the surface.", "A", True),
    ("I would pick A here.", "A", True), ("A. A is the best option.", "A", True),
    ("Option A, i.e. a meniscal tear", "A", True), (" a ", "A", True),
    ("B", "A", False), ("No tear", "A", False), ("The answer is C", "A", False),
    ("A or B", "A", False), ("A or B", "B", False), ("(A) or (B)", "A", False),
    ("Either A or C", "C", False), ("Both A and D", "D", False), ("A/B", "B", False),
    ("A, D", "A", False), ("Not A", "B", False), ("The answer is not A", "C", False),
    ("It is not C.", "A", False), ("I cannot determine this from the image.", "A", False),
    ("", "A", False), ("E", "A", False), ("The answer is B or C", "B", False),
    ("Bone bruise", "C", True), ("Joint effusion", "D", True), ("D) Joint effusion", "D", True),
    ("Option D, joint effusion", "D", True), ("no tear", "B", True),
    ("There is no tear.", "B", True), ("answer: (b)", "B", True),
    ("Answer: B. No tear is seen.", "B", True), ("C - bone bruise", "C", True),
    ("**Answer:** C", "C", True), ("The correct option is (D).", "D", True),
]  # fmt: skip

CHOICE_GRADE = [
    ("moderate (grade 2)", "C", True), ("C", "C", True), ("Moderate", "C", True),
    ("mild", "C", False), ("severe (grade 3)", "D", True), ("B. mild (grade 1)", "B", True),
]  # fmt: skip

CLOSED = [
    ("Yes", "yes", True), ("yes.", "yes", True), ("YES", "yes", True), ("**Yes**", "yes", True),
    ("Yes, there is a tear.", "yes", True), ("Yes, no effusion is seen.", "yes", True),
    ("yeah", "yes", True), ("The answer is yes.", "yes", True), ("Answer: yes", "yes", True),
    ("\\boxed{yes}", "yes", True), ("\\boxed{Yes}", "yes", True), ("No", "no", True),
    ("no.", "no", True), ("No, the meniscus is intact.", "no", True), ("Nope", "no", True),
    ("Answer: no", "no", True), ("\\boxed{no}", "no", True), ("No.", "yes", False),
    ("Yes", "no", False), ("yes or no", "yes", False), ("yes/no", "no", False),
    ("yes, no", "yes", False), ("Yes; no", "no", False), ("No idea.", "no", False),
    ("No comment", "no", False), ("No way to tell from this image.", "no", False),
    ("I am not sure.", "yes", False), ("", "no", False), ("maybe", "yes", False),
    ("No. The answer is yes", "yes", False), ("yesterday", "yes", False),
    ("Yes - a tear is present", "yes", True), ("**No**, intact.", "no", True),
]  # fmt: skip

CLOSED_QUESTION = [
    ("Normal", "no", ABN, True), ("Normal.", "yes", NORMAL, True),
    ("Unremarkable study.", "no", ABN, True), ("Abnormal", "no", NORMAL, True),
    ("Abnormal", "yes", ABN, True), ("Absent", "no", TEAR, True), ("Present", "yes", TEAR, True),
    ("Present", "no", TEAR, False), ("No evidence of a tear.", "no", TEAR, True),
    ("No evidence of effusion or tear.", "yes", NORMAL, True),
    ("There is a tear of the posterior horn.", "yes", TEAR, True),
    ("There is no tear.", "no", TEAR, True), ("There is no tear.", "yes", TEAR, False),
    ("Not seen.", "no", TEAR, True), ("Negative", "no", TEAR, True),
    ("Within normal limits", "yes", NORMAL, True), ("Within normal limits", "no", ABN, True),
]  # fmt: skip

OPEN = [
    ("meniscal tear", "meniscal tear", True), ("Meniscal tear.", "meniscal tear", True),
    ("The meniscal tear", "meniscal tear", True), ("Answer: meniscal tear", "meniscal tear", True),
    ("\\boxed{meniscal tear}", "meniscal tear", True),
    ("joint effusion, meniscal tear", "meniscal tear, joint effusion", True),
    ("meniscal tear and joint effusion", "meniscal tear, joint effusion", True),
    ("Joint effusion; meniscal tear", "meniscal tear, joint effusion", True),
    ("meniscal tear", "meniscal tear, joint effusion", False),
    ("meniscal tear, bone bruise", "meniscal tear, joint effusion", False),
    ("T2-weighted", "t2 weighted", True), ("2cm", "2 cm", True), ("2.0 cm", "2 cm", True),
    ("2.5 cm", "25 cm", False), ("two", "2", True), ("left", "right", False),
    ("Left-sided", "left sided", True), ("no abnormality", "no abnormality", True),
    ("No abnormality.", "no abnormality", True), ("abnormality", "no abnormality", False),
    ("pleural effusion", "pneumothorax", False), ("", "pneumothorax", False),
    ("The final answer is pneumothorax", "pneumothorax", True),
    ("pulmonary nodule, pleural effusion", "pleural effusion, pulmonary nodule", True),
    ("cardiomegaly", "cardiomegaly", True), ("CT", "ct", True), ("MRI", "mri", True),
    ("axial", "axial", True), ("coronal", "axial", False), ("T1", "t2", False),
]  # fmt: skip

SEVERITY = [
    ("2", "2", True), ("Grade 2", "2", True), ("grade II", "2", True), ("two", "2", True),
    ("2/3", "2", True), ("KL 3 out of 4", "3", True), ("Grade 2.", "2", True),
    ("1", "2", False), ("2.5", "2", False), ("grade 1-2", "2", False), ("unsure", "2", False),
    ("\\boxed{3}", "3", True), ("The severity is grade 0.", "0", True), ("Grade 3", "0", False),
    ("Grade III", "3", True), ("3 out of 3", "3", True),
]  # fmt: skip

CASES = (
    [(r, ref, "choice", ok, None, KNEE) for r, ref, ok in CHOICE]
    + [(r, ref, "choice", ok, None, GRADE) for r, ref, ok in CHOICE_GRADE]
    + [(r, ref, "closed", ok, TEAR, None) for r, ref, ok in CLOSED]
    + [(r, ref, "closed", ok, q, None) for r, ref, q, ok in CLOSED_QUESTION]
    + [(r, ref, "open", ok, None, None) for r, ref, ok in OPEN]
    + [(r, ref, "severity", ok, None, None) for r, ref, ok in SEVERITY]
)
