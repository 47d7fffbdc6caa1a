"""One preset per modality: a MONAI ``Compose`` for what ``load_scan`` returns.

Every preset maps intensities to [0, 1] and ends with :class:`SyncMeta`: ``meta["spacing"]``
matches the affine MONAI updated, ``meta["window"]`` (spent) is None, and ``load_scan``'s other
meta keys are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Compose,
    CropForeground,
    Orientation,
    Resize,
    ScaleIntensityRange,
    ScaleIntensityRangePercentiles,
    SpatialPad,
)

from medvl.scans.presets.transforms import (
    AnisotropicSpacing,
    FieldOfViewMask,
    ForegroundAbove,
    MaskOutsideCircle,
    OnVolumes,
    ScaleWindows,
    ScaleWithDicomWindow,
    SyncMeta,
    WindowSpec,
    _check_percentiles,
    parse_windows,
)

__all__ = ["brain_mri", "chest_xray", "ct", "fundus", "knee_mri"]

# MONAI's Orientation labels read "RAS" as +x right, +y anterior, +z superior: load_scan's.
_RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def knee_mri(
    target_spacing: float | Sequence[float] = 0.5,
    *,
    anisotropy_threshold: float | None = 3.0,
    percentiles: tuple[float, float] = (0.5, 99.5),
    foreground_threshold: float = 0.1,
    margin: int = 4,
    mode: str = "bilinear",
) -> Compose:
    """Knee MRI volumes (sagittal/coronal PD, T1, T2, DESS): scale, resample, crop.

    1. RAS orientation (a no-op on ``load_scan``'s output; there for other loaders).
    2. Percentile scaling: the ``percentiles`` (0.5th, 99.5th) of the volume map to 0 and 1,
       clipped. MRI has no physical intensity scale, and a robust min-max ignores the few
       flow or fat-suppression-failure outliers a plain min-max would stretch to; the 0.5/99.5
       cut-offs are nnU-Net's intensity clipping percentiles (Isensee et al., Nature Methods
       2021), here taken per image.
    3. Resampling to ``target_spacing`` (0.5 mm) except along the slice axis of a 2D
       multi-slice stack (:class:`AnisotropicSpacing`). 0.5 mm is about the in-plane resolution
       of clinical and research knee protocols (OAI: sagittal IW TSE 0.36 x 0.51 mm with 3 mm
       slices, 3D DESS 0.37 x 0.46 x 0.7 mm; Peterfy et al., Osteoarthritis Cartilage 2008;
       fastMRI knee ~0.5 mm in plane): it keeps the 2-3 mm thick cartilage 4-6 voxels deep
       and does not inflate the volume. The 3-4 mm slice spacing is kept, not interpolated.
    4. Foreground crop: the bounding box of the voxels above ``foreground_threshold`` (of the
       scaled image) plus ``margin`` voxels (2 mm at 0.5 mm), never beyond the image; removes
       the empty air around the knee, which otherwise fills most of the frames a VLM sees.

    A 2D slice (e.g. a VQA dataset's JPEG) gets steps 2 and 4 only (:class:`OnVolumes`).

    Args:
        target_spacing: mm, one value for all axes or one per RAS axis.
        anisotropy_threshold: an axis coarser than this times the finest keeps its spacing;
            None resamples every axis (e.g. ``target_spacing=(0.5, 0.5, 1.0)``, exactly).
        percentiles: (lower, upper) percentiles mapped to 0 and 1.
        foreground_threshold: scaled intensity above which a voxel is foreground.
        margin: voxels kept around the foreground box.
        mode: interpolation for the resampling (MONAI ``Spacing``).

    Returns:
        A Compose: MetaTensor ``(C, X, Y, Z)`` in, RAS MetaTensor in [0, 1] out.
    """
    return _mri(
        target_spacing, anisotropy_threshold, percentiles, foreground_threshold, margin, mode
    )


def brain_mri(
    target_spacing: float | Sequence[float] = 1.0,
    *,
    anisotropy_threshold: float | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    foreground_threshold: float = 0.1,
    margin: int = 2,
    mode: str = "bilinear",
) -> Compose:
    """Brain MRI volumes (T1, T2, FLAIR...): RAS, 1 mm isotropic, percentile scaling, crop.

    1. RAS orientation (a no-op on ``load_scan``'s output; there for other loaders).
    2. Percentile scaling as :func:`knee_mri` (0.5th/99.5th percentiles -> 0 and 1, clipped).
    3. Resampling to 1 mm isotropic: the grid of the MNI152 templates, of FreeSurfer's
       "conformed" space and of the BraTS challenge data (co-registered to SRI24 at 1 mm).
       Thick-slice clinical stacks are interpolated to 1 mm too unless an
       ``anisotropy_threshold`` is given (see :func:`knee_mri`).
    4. Foreground crop: voxels above ``foreground_threshold`` (scaled), plus ``margin`` voxels
       (2 mm), never beyond the image; removes the background around the head or the skull
       stripped brain.

    A 2D slice (e.g. a VQA dataset's JPEG) gets steps 2 and 4 only (:class:`OnVolumes`).

    Args:
        target_spacing: mm, one value for all axes or one per RAS axis.
        anisotropy_threshold: an axis coarser than this times the finest keeps its spacing;
            None (the default) resamples every axis.
        percentiles: (lower, upper) percentiles mapped to 0 and 1.
        foreground_threshold: scaled intensity above which a voxel is foreground.
        margin: voxels kept around the foreground box.
        mode: interpolation for the resampling (MONAI ``Spacing``).

    Returns:
        A Compose: MetaTensor ``(C, X, Y, Z)`` in, RAS MetaTensor in [0, 1] out.
    """
    return _mri(
        target_spacing, anisotropy_threshold, percentiles, foreground_threshold, margin, mode
    )


def _mri(
    target_spacing: float | Sequence[float],
    anisotropy_threshold: float | None,
    percentiles: tuple[float, float],
    foreground_threshold: float,
    margin: int,
    mode: str,
) -> Compose:
    lower, upper = percentiles
    _check_percentiles(lower, upper)
    return Compose(
        [
            OnVolumes(Orientation(axcodes="RAS", labels=_RAS_LABELS)),
            ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True),
            # Bilinear interpolation of [0, 1] values stays in [0, 1]; "border" padding adds
            # no dark rim that the crop below would mistake for an edge.
            OnVolumes(AnisotropicSpacing(target_spacing, anisotropy_threshold, mode=mode)),
            CropForeground(
                select_fn=ForegroundAbove(foreground_threshold), margin=margin, allow_smaller=True
            ),
            SyncMeta(),
        ]
    )


def ct(
    window: WindowSpec | Sequence[WindowSpec] = "soft_tissue",
    *,
    spacing: float | Sequence[float] | None = None,
    mode: str = "bilinear",
) -> Compose:
    """CT (2D slice or 3D volume) in Hounsfield units: optional resampling, then windowing.

    A window maps ``center - width / 2`` HU to 0 and ``center + width / 2`` to 1, clipping
    outside (MONAI ``ScaleIntensityRange``). The named windows (:data:`CT_WINDOWS`) are the
    standard radiology display settings: ``soft_tissue`` W400/L50, ``lung`` W1500/L-600,
    ``bone`` W1800/L400, ``brain`` W80/L40, ``mediastinum`` W350/L50. Several windows stack as
    channels: ``ct(window=("soft_tissue", "lung", "bone"))`` gives a 3-channel image, a common
    way to feed CT to RGB-pretrained networks (e.g. the RSNA intracranial-haemorrhage challenge
    solutions' brain/subdural/bone "window channels").

    Resampling, when asked, runs on the Hounsfield units before windowing: interpolating then
    clipping is exact where clipping then interpolating blurs the window's edges.

    Args:
        window: a name, a ``(center, width)`` pair, a ``{"center"|"level": .., "width": ..}``
            mapping, a :class:`Window`, or a list of those for one channel each. Note the
            order: center (level) first, as DICOM's WindowCenter/WindowWidth and
            ``meta["window"]``.
        spacing: target spacing in mm (one value or one per axis); None keeps the scan's.
        mode: interpolation for the resampling.

    Returns:
        A Compose: MetaTensor in HU in, MetaTensor in [0, 1] out, one channel per window.
    """
    windows = parse_windows(window)
    steps = []
    if spacing is not None:
        steps.append(AnisotropicSpacing(spacing, anisotropy_threshold=None, mode=mode))
    if len(windows) == 1:
        w = windows[0]
        steps.append(ScaleIntensityRange(w.low, w.high, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(ScaleWindows(windows))
    steps.append(SyncMeta())
    return Compose(steps)


def chest_xray(
    size: int = 512,
    *,
    pad_to_square: bool = False,
    use_dicom_window: bool = True,
    percentiles: tuple[float, float] = (0.5, 99.5),
    mode: str = "bilinear",
    anti_aliasing: bool = True,
) -> Compose:
    """Chest radiographs (DICOM CR/DX, PNG, JPEG): VOI window or percentiles, resize, pad.

    1. Intensities to [0, 1] with the file's DICOM VOI window (WindowCenter/WindowWidth,
       ``meta["window"]``) when it has one: the display the acquisition chose, which a raw
       12-16 bit detector image needs to look like a radiograph. MONOCHROME1 files (common for
       CR/DX: bone white at low values) are already mirrored by ``load_scan``, window
       included. Without a window, the ``percentiles`` (0.5th/99.5th) map to 0 and 1.
    2. Aspect-preserving resize so that the longer side is ``size`` (MONAI ``Resize`` with
       ``size_mode="longest"``), antialiased when shrinking. 512 px is a standard CXR
       resolution (e.g. torchxrayvision's 512 px model, many RSNA/SIIM challenge pipelines),
       about 0.7-0.85 mm per pixel for a 35-43 cm detector, and about 330 visual tokens for a
       Qwen2-VL-family model (28 px per token).
    3. Optionally, zero padding (black) centred to ``size x size``.

    Args:
        size: the longer side of the output, pixels.
        pad_to_square: pad the shorter side to ``size``.
        use_dicom_window: False ignores the file's window and always uses percentiles.
        percentiles: (lower, upper) percentiles mapped to 0 and 1 when there is no window.
        mode: interpolation of the resize (MONAI ``Resize``).
        anti_aliasing: Gaussian smoothing before shrinking, against aliasing of fine lines.

    Returns:
        A Compose: 2D MetaTensor ``(C, W, H)`` in, ``(C, W', H')`` in [0, 1] out.
    """
    lower, upper = percentiles
    steps = [
        ScaleWithDicomWindow(lower, upper, use_window=use_dicom_window),
        Resize(
            spatial_size=_positive_size(size),
            size_mode="longest",
            mode=mode,
            anti_aliasing=anti_aliasing,
        ),
    ]
    if pad_to_square:
        steps.append(SpatialPad(spatial_size=(size, size), method="symmetric"))
    steps.append(SyncMeta())
    return Compose(steps)


def fundus(
    size: int = 512,
    *,
    fov_threshold: float = 0.04,
    min_fraction: float = 0.05,
    mask_outside_fov: bool = True,
    pad_to_square: bool = True,
    max_value: float = 255.0,
    mode: str = "bilinear",
    anti_aliasing: bool = True,
) -> Compose:
    """Colour fundus photographs (RGB PNG/JPEG): crop to the field of view, mask, resize, pad.

    1. ``[0, max_value]`` (8-bit: 255) to [0, 1].
    2. Crop to the circular field of view: the bounding box of the red channel above
       ``fov_threshold`` (0.04, about 10/255), made robust to stray bright pixels and
       burnt-in labels (:class:`FieldOfViewMask`), as in common diabetic-retinopathy
       preprocessing (Graham's Kaggle DR 2015 method; the APTOS 2019 "crop_image_from_gray"
       kernels, tolerance 7/255).
       The disc then fills the frame whatever the camera's black border.
    3. Optionally, zero outside the disc (:class:`MaskOutsideCircle`): corner glare and text.
    4. Aspect-preserving resize, longer side ``size`` (512, a common DR training size), and
       optionally black padding to ``size x size`` (a disc clipped at the top and bottom comes
       back to a square, centred).

    Args:
        size: the longer side of the output, pixels.
        fov_threshold: red intensity (in [0, 1]) separating the disc from the black border.
        min_fraction: see :class:`FieldOfViewMask`.
        mask_outside_fov: zero the pixels outside the disc.
        pad_to_square: pad the shorter side to ``size``.
        max_value: the white of the input (255 for 8-bit images).
        mode: interpolation of the resize (MONAI ``Resize``).
        anti_aliasing: Gaussian smoothing before shrinking.

    Returns:
        A Compose: 2D MetaTensor ``(3, W, H)`` in, ``(3, W', H')`` in [0, 1] out.
    """
    if not max_value > 0:
        raise ValueError(f"max_value must be positive, got {max_value}")
    steps = [
        ScaleIntensityRange(0.0, max_value, b_min=0.0, b_max=1.0, clip=True),
        CropForeground(
            select_fn=FieldOfViewMask(fov_threshold, min_fraction),
            channel_indices=0,  # red: the brightest channel of a fundus
            allow_smaller=True,
        ),
    ]
    if mask_outside_fov:
        steps.append(MaskOutsideCircle())
    steps.append(
        Resize(
            spatial_size=_positive_size(size),
            size_mode="longest",
            mode=mode,
            anti_aliasing=anti_aliasing,
        )
    )
    if pad_to_square:
        steps.append(SpatialPad(spatial_size=(size, size), method="symmetric"))
    steps.append(SyncMeta())
    return Compose(steps)


def _positive_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer (pixels), got {size!r}")
    return size
