"""load_scan on PNG and JPEG: axis 0 is x (columns), axis 1 is y (rows), as displayed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvl.scans import ScanError, example_scan, load_scan

H, W = 20, 30  # rows, columns: unequal, to catch swapped axes


def gradient() -> np.ndarray:
    """(H, W) uint8: value = 8 * column + row, so every pixel says where it is."""
    rows, cols = np.mgrid[0:H, 0:W]
    return (8 * cols + rows).clip(0, 255).astype(np.uint8)


def test_grayscale_png(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "g.png")
    scan = load_scan(tmp_path / "g.png")
    assert tuple(scan.shape) == (1, W, H) and scan.dtype == torch.float32
    np.testing.assert_array_equal(scan[0].numpy(), gradient().T)  # scan[0, x, y] = pixel(x, y)
    assert scan[0, 5, 3].item() == 8 * 5 + 3
    assert scan.meta["format"] == "png" and scan.meta["spatial_ndim"] == 2
    assert scan.meta["orientation"] is None and scan.meta["spacing"] == (1.0, 1.0)
    assert scan.meta["modality"] == "OT" and scan.meta["study_year"] is None


def test_rgb_png(tmp_path):
    rgb = np.stack([gradient(), 255 - gradient(), np.full((H, W), 7, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    scan = load_scan(tmp_path / "c.png", modality="XC")
    assert tuple(scan.shape) == (3, W, H)
    np.testing.assert_array_equal(scan.numpy(), rgb.transpose(2, 1, 0))
    assert scan.meta["modality"] == "XC"


def test_grayscale_jpeg(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "g.jpg", quality=100)
    scan = load_scan(tmp_path / "g.jpg")
    assert tuple(scan.shape) == (1, W, H) and scan.meta["format"] == "jpeg"
    np.testing.assert_allclose(scan[0].numpy(), gradient().T, atol=3)  # lossy


def test_rgba_palette_and_16_bit_pngs(tmp_path):
    rgba = np.dstack([np.full((H, W, 3), 200, np.uint8), np.full((H, W), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert tuple(load_scan(tmp_path / "a.png").shape) == (3, W, H)  # alpha dropped
    Image.fromarray(gradient()).convert("RGB").quantize(64).save(tmp_path / "p.png")
    palette = load_scan(tmp_path / "p.png")  # colours, not palette indices
    assert tuple(palette.shape) == (3, W, H) and float(palette.max()) > 63
    deep = gradient().astype(np.uint16) * 200  # up to 51000: a 16-bit PNG
    Image.fromarray(deep).save(tmp_path / "d.png")
    np.testing.assert_array_equal(load_scan(tmp_path / "d.png")[0].numpy(), deep.T)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(gradient())
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: displayed rotated 90 degrees clockwise
    image.save(tmp_path / "r.jpg", exif=exif, quality=100)
    scan = load_scan(tmp_path / "r.jpg")
    assert tuple(scan.shape) == (1, H, W)  # the displayed image is W rows by H columns


def test_retina_fundus_photograph():
    try:
        path = example_scan("retina")
    except ScanError as e:
        pytest.skip(str(e))
    scan = load_scan(path, modality="OP")
    assert tuple(scan.shape) == (3, 1411, 1411) and scan.meta["format"] == "png"
    assert scan.meta["modality"] == "OP"
    assert float(scan[0].mean()) > float(scan[2].mean())  # a fundus is red


def test_truncated_and_corrupt_images(tmp_path):
    Image.fromarray(gradient()).save(tmp_path / "g.png")
    data = (tmp_path / "g.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanError, match=r"cut\.png: not a readable PNG image") as err:
        load_scan(tmp_path / "cut.png")
    assert err.value.__cause__ is not None
    (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8" + np.random.default_rng(2).bytes(500))
    with pytest.raises(ScanError, match=r"noise\.jpg: not a readable JPG image"):
        load_scan(tmp_path / "noise.jpg")
