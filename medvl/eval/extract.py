"""Reading the answer out of a model's answer text: option letters, yes/no, grades, free text.

Every function here takes whatever the model wrote (usually the ``<answer>`` part that
:func:`medvl.model.replies.parse_response` returns) and never raises: anything it cannot read
with confidence, including a non-string, gives None. The rules are deliberately conservative,
because a wrong reading scores a wrong answer as right (or the reverse) and, in GRPO, rewards it:

* :func:`extract_choice` reads "B", "(B)", "B.", "B) text", "Answer: B", "the answer is b",
  "Option B", or the option's own text instead of its letter. Several different letters (or
  several different option texts) give None.
* :func:`extract_yes_no` reads a leading yes/no ("Yes.", "no, there is not") or one after an
  answer cue ("The answer is no"). A sentence without the word, such as "There is no effusion",
  gives None: "no" inside a sentence negates a finding, and whether that means "no" depends on
  the question ("Is the knee normal?" -> "There is no abnormality" means yes).
* :func:`extract_grade` reads one integer grade ("2", "Grade 2", "grade II", "two", "2/4",
  "KL 3 out of 4"); several different grades, decimals and grades above ``max_grade`` give None.
* :func:`normalize_text` (:mod:`medvl.eval.normalize`) is the SQuAD v1.1 answer normalisation
  with medical-answer fixes (hyphens, decimals, units, number words).

Every reader unwraps LaTeX ``\\boxed{...}`` first.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

from medvl.eval.normalize import normalize_text, unbox

__all__ = [
    "extract_choice",
    "extract_choices",
    "extract_grade",
    "extract_yes_no",
    "is_hedge",
    "normalize_text",
    "says_both",
]


def _letters(options: Any) -> list[str]:
    """The option letters: a mapping's keys, a sequence of letters, or A-Z when unknown."""
    if isinstance(options, Mapping):
        keys = options.keys()
    elif isinstance(options, Iterable):  # a sequence of letters, or a string such as "ABCD"
        keys = list(options)
    else:
        keys = string.ascii_uppercase
    return [k.upper() for k in keys if isinstance(k, str) and len(k) == 1 and k.isalpha()]


# A whole answer that is one letter: "B", "(B)", "B.", "[b]", "**B**", "B)".
_ALONE = re.compile(r"[\s*_`\"'\[(]*([A-Za-z])[\s*_`\"'\])]*[.:;!]?[\s*_`\"']*")
# An explicit cue, then a letter: "answer is B", "Answer: (b)", "option C", "choice: D".
_CUE = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is\s*|:\s*|=\s*|-\s*)?(?:option\s*|choice\s*)?"
    r"[*_`\"'\[(]*([A-Za-z])(?![A-Za-z0-9'])",
    re.IGNORECASE,
)
# A cue letter followed by another letter: "answer is B or C", "option B/C".
_MORE = re.compile(
    r"[\])*_`\"']*\s*(?:,|/|&|\bor\b|\band\b)\s*[*_`\"'\[]*(?:\([A-Za-z]\)|[A-Z])"
    r"(?![A-Za-z0-9'])"
)
# A leading letter introducing the option's text: "B. Meniscal tear", "(B) tear", "B) tear".
_LEADING = re.compile(r"[\s*_`\"']*(?:\(([A-Za-z])\)|([A-Z])[.):])(?:\s|$)")
# A hedge: two option letters offered together ("A or B", "(A)/(B)", "A, B", "either A or
# C", "both A and C") or a letter ruled out ("not A"). Letters as uppercase words or bracketed.
_HEDGE_LETTER = r"(?:\(([A-Za-z])\)|(?<![\w'’-])([A-Z])(?![\w'’-]))"
_HEDGE_PAIR = re.compile(
    rf"{_HEDGE_LETTER}[*_`\"']*\s*(?:,|/|&|\bor\b|\band\b)\s*[*_`\"']*{_HEDGE_LETTER}"
)
_NEGATED = re.compile(rf"\bnot\s+(?:option\s+|choice\s+)?[*_`\"']*{_HEDGE_LETTER}", re.I)
# An uppercase letter standing alone anywhere: "I would pick B here".
_STANDALONE = re.compile(r"(?<![\w'’-])\(?([A-Z])\)?(?![\w'’-])")


def _option_text_letter(text: str, options: Any) -> str | None:
    if not isinstance(options, Mapping):
        return None
    said = normalize_text(text)
    if not said:
        return None
    texts = {}
    for letter, option in options.items():
        norm = normalize_text(option)
        if isinstance(letter, str) and norm:
            texts[letter.upper()] = norm
    exact = {letter for letter, norm in texts.items() if norm == said}
    if exact:
        return exact.pop() if len(exact) == 1 else None
    padded = f" {said} "
    found = {letter: norm for letter, norm in texts.items() if f" {norm} " in padded}
    # "no tear" also contains "tear": an option text inside a longer found one does not count.
    kept = {
        letter
        for letter, norm in found.items()
        if not any(norm != other and f" {norm} " in f" {other} " for other in found.values())
    }
    return kept.pop() if len(kept) == 1 else None


def is_hedge(text: Any, options: Any = None) -> bool:
    """Whether a choice reply hedges: it offers two option letters joined by "or", "and", "/",
    "&" or a comma (``"A or B"``, ``"(A) or (B)"``, ``"Either A or C"``, ``"Both A and C"``,
    ``"B, E"``), or rules a letter out (``"not A"``, ``"The answer is not A"``).

    Letters count when they are options (any letter when ``options`` is None) and stand alone
    in uppercase or in brackets, so "a or an" in prose is no hedge. A reward must not pay a
    hedge whose last letter happens to be right.

    Args:
        text: The answer text.
        options: As in :func:`extract_choice`.

    Returns:
        True for a hedge; False otherwise (and for anything but a string).
    """
    if not isinstance(text, str):
        return False
    letters = set(_letters(options))

    def named(match: re.Match, first: int) -> str | None:
        letter = (match.group(first) or match.group(first + 1) or "").upper()
        return letter if letter in letters else None

    for pair in _HEDGE_PAIR.finditer(text):
        a, b = named(pair, 1), named(pair, 3)
        if a and b and a != b:
            return True
    return any(named(m, 1) for m in _NEGATED.finditer(text))


_OR = re.compile(r"\bor\b|\beither\b|\bnot\b", re.I)


def extract_choices(text: Any, options: Any = None) -> frozenset[str] | None:
    """The set of option letters a reply gives to a question with several right options
    (``"B, E, F"``, ``"(B) and (E)"``, ``"B E F"``), or None.

    Letters count when they are options and stand alone in uppercase or in brackets. A reply
    that offers alternatives or rules one out (``"B or E"``, ``"not B"``) gives None: a set
    answer is the letters chosen, all of them.

    Args:
        text: The answer text.
        options: As in :func:`extract_choice`.

    Returns:
        A frozenset of uppercase letters (one or more), or None. Never raises.
    """
    if not isinstance(text, str) or not text.strip() or _OR.search(text):
        return None
    letters = set(_letters(options))
    found = {(a or b).upper() for a, b in re.findall(_HEDGE_LETTER, text)}
    found = {f for f in found if f in letters}
    if len(found) <= 1:  # one option, maybe by its text: extract_choice's rules
        alone = extract_choice(text, options)
        return None if alone is None else frozenset({alone})
    return frozenset(found)


def extract_choice(text: Any, options: Any = None) -> str | None:
    """The option letter a reply chooses, or None.

    Tried in order, the first rule that reads something decides:

    1. The whole reply, or its first line, is one letter, maybe in brackets or with a full
       stop: ``"b"``, ``"(B)"``, ``"B\\nBecause the tear..."``.
    2. An answer cue: ``"Answer: B"``, ``"the answer is b"``, ``"Option (C)"``; a cue naming
       two letters (``"answer is B or C"``) gives None, and so do cues naming different letters.
    3. A leading letter before the option's text: ``"B. Meniscal tear"``, ``"(B) tear"``.
    4. The option's text instead of its letter (SQuAD-normalised, see :func:`normalize_text`):
       the whole reply, else the one option text found in it as whole words (an option text
       that is part of another found one, such as "tear" in "no tear", is not counted).
    5. Uppercase letters standing alone anywhere (``"I pick B"``), with "A" and "I" skipped
       when a lowercase word follows them (the article and the pronoun).

    A letter that is not an option gives None; several different letters give None, repeats
    of the same one do not (``"B. B is correct"``). A hedge gives None before any rule runs
    (`is_hedge`: ``"A or B"``, ``"A/B"``, ``"A, B"``, ``"either A or C"``, ``"not A"``): a
    reply that offers two options or rules one out has chosen none.

    Args:
        text: The answer text.
        options: Letter -> option text (as in ``Sample.options``), a sequence of letters, or
            None (any letter A-Z; option texts cannot be matched then).

    Returns:
        The uppercase letter, or None. Never raises.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    letters = _letters(options)
    text = unbox(text).strip()
    if is_hedge(text, options):
        return None
    lines = text.splitlines()
    if len(lines) > 1 and (first := _ALONE.fullmatch(lines[0].strip())):
        # A letter alone on the first line is the choice; what follows explains it.
        letter = first.group(1).upper()
        return letter if letter in letters else None

    def valid(found: set[str]) -> str | None:
        found = {f.upper() for f in found}
        if len(found) != 1:
            return None
        (letter,) = found
        return letter if letter in letters else None

    if alone := _ALONE.fullmatch(text):
        return valid({alone.group(1)})
    # "the answer is a meniscal tear": an article (or "I") after the cue, not a letter.
    cues = [
        cue
        for cue in _CUE.finditer(text)
        if not (cue.group(1) in "aAiI" and re.match(r"\s+[a-z]", text[cue.end() :]))
    ]
    if cues:
        if any(_MORE.match(text, cue.end()) for cue in cues):
            return None
        return valid({cue.group(1) for cue in cues})
    if lead := _LEADING.match(text):
        letter = valid({lead.group(1) or lead.group(2)})
        rest = _STANDALONE.findall(text[lead.end() :])
        others = {r for r in rest if r in letters and r != letter}
        if letter and not others:
            return letter
    if (by_text := _option_text_letter(text, options)) is not None:
        return by_text
    found = set()
    for match in _STANDALONE.finditer(text):
        letter = match.group(1)
        if letter in "AI" and re.match(r"\s+[a-z]", text[match.end() :]):
            continue
        if letter in letters:
            found.add(letter)
    return valid(found) if found else None


_YES = ("yes", "yeah", "yep")
_NO = ("no", "nope")
_YN_LEAD = re.compile(r"[\s*_`\"'(\[]*([A-Za-z]+)\b")
_YN_CUE = re.compile(r"\banswer\s*(?:is\s*|:\s*|=\s*|-\s*)[*_`\"'\[(]*([A-Za-z]+)\b", re.I)
# Both answers offered: "yes or no", "no/yes", or the whole reply "yes, no" / "Yes; no".
_BOTH = re.compile(
    r"^\W*(?:yes|no)\s*(?:\bor\b|\band\b|/|&)\s*(?:yes|no)\b"
    r"|^\W*(?:yes|no)\W+(?:yes|no)\W*$",
    re.I,
)
# A leading "no" that is no answer: "No idea.", "No comment", "No way to tell".
_NON_ANSWER = re.compile(
    r"^\W*no\s+(?:idea|comment|clue|answer|opinion|definite|conclusive|certain"
    r"|way\s+to\s+(?:tell|know|say))\b",
    re.I,
)
# Statements whose yes/no depends on the question (`_by_question`).
_DENIAL = re.compile(
    r"^\W*(?:absent|none|negative|without|not\s+(?:seen|present|visible|identified|detected)"
    r"|no\s+(?:evidence|signs?|features?)\s+of|there\s+(?:is|are)\s+no)\b",
    re.I,
)
_PRESENT = re.compile(
    r"^\W*(?:present|positive|seen|visible|identified|detected"
    r"|there\s+(?:is|are)\s+(?!no\b)\w)",
    re.I,
)
_NORMAL = re.compile(
    r"^\W*(?:normal|unremarkable|within\s+normal\s+limits|no\s+abnormalit(?:y|ies))\b", re.I
)
_ABNORMAL = re.compile(r"^\W*abnormal\b", re.I)
_ASKS_NORMAL = re.compile(r"\bnormal\b", re.I)


def _yes_no_word(word: str) -> str | None:
    word = word.lower()
    return "yes" if word in _YES else "no" if word in _NO else None


def says_both(text: Any) -> bool:
    """Whether a closed reply offers both answers ("yes or no", "yes/no", "Yes; no"): a hedge,
    scored wrong whatever the truth."""
    return isinstance(text, str) and bool(_BOTH.match(unbox(text)))


def _by_question(text: str, question: str) -> str | None:
    """Yes/no from a statement whose meaning depends on the question: "Normal", "Absent", "No
    evidence of X", "Present", "There is a tear". A question about normality ("Is the knee
    normal?") reads "Normal" and a denied finding as yes; any other closed question (about a
    finding or an abnormality) reads them as no, and a found one as yes."""
    normality = bool(_ASKS_NORMAL.search(question))  # "abnormal" has no word boundary there
    if _NORMAL.match(text) or _DENIAL.match(text):
        return "yes" if normality else "no"
    if _ABNORMAL.match(text):
        return "no" if normality else "yes"
    if _PRESENT.match(text) and not normality:
        return "yes"
    return None


def extract_yes_no(text: Any, question: str | None = None) -> str | None:
    """``"yes"`` or ``"no"`` from a closed-question reply, conservatively; else None.

    Read: a reply whose first word is yes/no (``"Yes."``, ``"no, there is not"``, ``"**No**"``;
    also ``yeah``, ``yep``, ``nope``), or whose answer cue is followed by one (``"The answer is
    yes"``, ``"Answer: no"``), inside ``\\boxed{}`` or not. Several cues that disagree, both
    answers offered (``"yes or no"``, ``"yes/no"``, ``"Yes; no"``) and a "no" that is no answer
    (``"No idea."``, ``"No comment"``) give None.

    With the ``question``, statements are read too (`_by_question`): ``"Normal"``,
    ``"Absent"``, ``"No evidence of effusion"``, ``"Present"``, ``"There is a tear"`` — "no"
    to "Is there any abnormality?", "yes" to "Is the knee normal?". Without it they give None
    (a leading "No evidence ..." still reads as no).

    Not read (None): yes/no only inside a sentence (``"I see no tear"``) and synonyms that need
    the question when it is not given.

    Args:
        text: The answer text.
        question: The question asked, if known.

    Returns:
        ``"yes"``, ``"no"`` or None. Never raises.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    text = unbox(text)
    if _BOTH.match(text) or _NON_ANSWER.match(text):
        return None
    if isinstance(question, str) and (said := _by_question(text, question)):
        return said
    cues = {_yes_no_word(m.group(1)) for m in _YN_CUE.finditer(text)}
    cues.discard(None)
    if len(cues) > 1:
        return None
    lead = _YN_LEAD.match(text)
    first = _yes_no_word(lead.group(1)) if lead else None
    if first and cues and cues != {first}:
        return None
    if first:
        return first
    return cues.pop() if cues else None


_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_ROMAN = {"0": 0, "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_WORD_RE = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b")
_ROMAN_CUE = re.compile(r"\b(?:grade|stage|kl|class|score)\s*[:=]?\s*(i{1,3}|iv|vi?)\b", re.I)
# An integer not part of a decimal or a fraction's denominator ("2/4", "out of 4", "of 4").
_INT = re.compile(r"(?<![\d./])(\d+)(?!\d|\.\d)")
_DENOMINATOR = re.compile(r"(?:/\s*|\bout\s+of\s+|\bof\s+)(\d+)\b", re.I)
_DECIMAL = re.compile(r"\d\.\d")


def extract_grade(text: Any, max_grade: int | None = None) -> int | None:
    """One integer severity grade from a reply, or None.

    Read: digits (``"2"``, ``"Grade 2."``, ``"KL 3"``), a fraction or "out of" whose first number
    is the grade (``"2/4"``, ``"3 out of 4"``: the scale is not a second grade), number words
    ``zero``..``ten`` and roman numerals after grade/stage/KL/class/score (``"grade II"``).
    Several different grades, a decimal (``"2.5"``) or a negative number give None, as does a
    grade above ``max_grade``.

    Args:
        text: The answer text.
        max_grade: The top of the scale, if known; grades above it are not read.

    Returns:
        The grade (>= 0), or None. Never raises.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    if _DECIMAL.search(text) or re.search(r"(?<![\w])-\s*\d", text):
        return None
    denominators = {m.start(1) for m in _DENOMINATOR.finditer(text)}
    found = {int(m.group(1)) for m in _INT.finditer(text) if m.start(1) not in denominators}
    lower = text.lower()
    found |= {_NUMBER_WORDS[m.group(1)] for m in _WORD_RE.finditer(lower)}
    found |= {_ROMAN[m.group(1).lower()] for m in _ROMAN_CUE.finditer(text)}
    if len(found) != 1:
        return None
    (grade,) = found
    if max_grade is not None and grade > max_grade:
        return None
    return grade
