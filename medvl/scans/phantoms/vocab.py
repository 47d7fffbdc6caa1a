"""Words for the phantoms' findings: display names, locations, and how each one looks.

Shared by anything that turns a `PhantomCase` into text (``medvl.data.phantom_samples``).
"""

from __future__ import annotations

from medvl.scans.phantoms.chest import NODULE_ZONES
from medvl.scans.phantoms.fundus import QUADRANTS
from medvl.scans.phantoms.knee import BONE_LOCATIONS, MENISCAL_HORNS

NAMES = {
    "bone_marrow_lesion": "bone marrow lesion", "cartilage_defect": "cartilage defect",
    "meniscal_tear": "meniscal tear", "effusion": "joint effusion",
    "haemorrhages": "retinal haemorrhages", "hard_exudates": "hard exudates",
    "microaneurysms": "microaneurysms", "drusen": "drusen",
    "neovascularisation": "neovascularisation", "nodule": "pulmonary nodule",
    "pleural_effusion": "pleural effusion", "cardiomegaly": "cardiomegaly",
    "pneumothorax": "pneumothorax",
}  # fmt: skip
PLURAL = {"haemorrhages", "hard_exudates", "microaneurysms", "drusen"}
MASS = {"cardiomegaly", "neovascularisation"}  # no article
# The four possible places of each localisable finding (the options of a "where?" question).
LOCATIONS = {
    "bone_marrow_lesion": BONE_LOCATIONS, "cartilage_defect": BONE_LOCATIONS,
    "meniscal_tear": MENISCAL_HORNS, "haemorrhages": QUADRANTS, "hard_exudates": QUADRANTS,
    "nodule": NODULE_ZONES,
}  # fmt: skip
SEEN = {
    "bone_marrow_lesion": "ill-defined high signal in the subchondral marrow of the {loc}",
    "cartilage_defect": "fluid-bright signal filling a gap in the cartilage over the {loc}",
    "meniscal_tear": "linear high signal through the {loc}",
    "effusion": "fluid distending the {loc}",
    "haemorrhages": "dark red blot and flame haemorrhages, the largest {loc}",
    "hard_exudates": "clusters of yellow waxy spots, {loc}",
    "microaneurysms": "tiny round red dots ({loc} and elsewhere)",
    "drusen": "pale yellow round deposits around the {loc}",
    "neovascularisation": "a tuft of fine tortuous new vessels at the {loc}",
    "nodule": "a round soft-tissue opacity in the {loc}",
    "pleural_effusion": "a homogeneous basal opacity with a meniscus in the {loc}",
    "cardiomegaly": "an enlarged cardiac silhouette",
    "pneumothorax": "a visceral pleural line with no lung markings beyond it at the {loc}",
}  # fmt: skip


def verb(name: str) -> str:
    """``is`` or ``are``, agreeing with the finding's display name."""
    return "are" if name in PLURAL else "is"


def presence_question(name: str) -> str:
    """``Is there a nodule`` / ``Are there drusen`` / ``Is there cardiomegaly``."""
    if name in PLURAL:
        return f"Are there {NAMES[name]}"
    return f"Is there {'' if name in MASS else 'a '}{NAMES[name]}"
