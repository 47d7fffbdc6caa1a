"""medvl.model.publish: a checkpoint folder appears whole, its config last."""

from __future__ import annotations

from medvl.model.medvlm_config import CONFIG_NAME, HEADS_NAME
from medvl.model.publish import publish


def _folder(path, files):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_a_new_checkpoint_is_one_rename(tmp_path):
    tmp = _folder(tmp_path / ".final.tmp-1", {"model.safetensors": "w", CONFIG_NAME: "{}"})
    publish(tmp, tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
        CONFIG_NAME, "model.safetensors"
    ]
    assert not tmp.exists()


def test_saving_into_an_old_checkpoint_drops_its_stale_weights(tmp_path):
    old = {"adapter_model.safetensors": "old", "adapter_config.json": "old", HEADS_NAME: "old",
           CONFIG_NAME: "old", "notes.txt": "kept"}  # fmt: skip
    final = _folder(tmp_path / "final", old)
    tmp = _folder(tmp_path / ".final.tmp-2", {"model.safetensors": "new", CONFIG_NAME: "new"})
    publish(tmp, final)
    assert {p.name: p.read_text() for p in final.iterdir()} == {
        "model.safetensors": "new", CONFIG_NAME: "new", "notes.txt": "kept"
    }
    assert not tmp.exists()
