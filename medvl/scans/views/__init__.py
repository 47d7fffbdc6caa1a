"""Views: turning a scan into the pictures a VLM sees, each with an exact coordinate map.

medvl's coordinate convention (``shared/DESIGN.md``) is stated here once::

      2D image (C, W, H)                  3D volume (C, X, Y, Z), RAS
      x = spatial axis 0 ->               x = axis 0 / X, y = axis 1 / Y, z = axis 2 / Z
    y  +-----------------+ (1, 0)
    =  |                 |                box = [x1, y1, z1, x2, y2, z2] in [0, 1]
    a  |     [x1, y1,    |
    x  |      x2, y2]    |
    i  |                 |
    s  +-----------------+ (1, 1)
    1 (0, 1)

Boxes are normalised to [0, 1] with corners on pixel *edges*, so the whole image is
``[0, 0, 1, 1]``: a pixel with index ``i`` on an axis of length ``n`` spans ``[i/n, (i+1)/n]``.
A 2D scan tensor is indexed ``(C, W, H)`` (MONAI's PILReader layout), so x and y follow spatial
axes 0 and 1 exactly as x, y and z follow axes 0, 1 and 2 of a volume. ``scan_to_image`` shows a
2D scan as stored (column = axis 0, row = axis 1), so its boxes need no conversion.

**Display orientation of a volume.** A plane across ``axis`` shows the two other array axes: the
lower one across (``h_axis``), the higher one down (``v_axis``). By default it is drawn as
radiologists read it (``orientation="radiological"``): the patient's right on the viewer's left,
anterior / superior up, anterior on the left of a sagittal plane. For a RAS array that means every
in-plane index grows leftwards or upwards (arrows)::

       axial (axis=2)          coronal (axis=1)        sagittal (axis=0)
             A                        S                       S
         +--------+              +--------+              +--------+
         |    ^ j |              |    ^ k |              |    ^ k |
       R |  i <-+ | L          R |  i <-+ | L          A |  j <-+ | P
         +--------+              +--------+              +--------+
             P                        I                       I

``"neurological"`` keeps the patient's left on the left (i grows rightwards); ``"array"`` flips
nothing (index grows rightwards and downwards, as stored). ``PlaneMap.edges`` names the patient
direction at each edge, e.g. for a prompt.

**Physical aspect ratio.** Voxels are rarely cubes (e.g. 0.4 x 0.4 x 3 mm), so each plane is
resized so that a display pixel is square in millimetres: pitch = the finer in-plane spacing, or
the longer side = ``size`` pixels. The whole plane maps onto the whole picture, edges on edges, so
in normalised coordinates the only change is ``t -> 1 - t`` on a flipped axis::

      display x / W = 1 - i / n_h   (flipped)        voxel i spans display x in
      display x / W =     i / n_h   (not flipped)    [n_h - i - 1, n_h - i] * W / n_h (flipped)

**The views and their maps** (3D boxes always normalised; points in continuous display pixels,
pixel ``(c, r)`` spanning ``[c, c+1] x [r, r+1]``)::

      view                 3D box -> 2D                     2D -> 3D box          points
      FrameView   frames   frame_boxes: {frame: unit box}   box_from_frames       voxel_at, locate
      MontageView image    tile_boxes: {tile: pixel box}    box_from_tiles        voxel_at, locate
      SliceView   image    image_box: unit box or None      box_from_image        voxel_at, locate
      MIPView     image    image_box: unit box or None      box_from_image        voxel_at, locate

Going back, in-plane extents are the union of the 2D boxes and the through-plane extent spans the
shown slices (the slab, for a MIP), so a round trip is exact in-plane and within one voxel
through-plane when every slice is shown.
"""

from medvl.scans.views.coords import Orientation, PlaneMap
from medvl.scans.views.planar import MIPView, SliceView, volume_to_mip, volume_to_slice
from medvl.scans.views.render import Resample, draw_box, scan_to_image, to_uint8
from medvl.scans.views.settings import VIEWS, ViewName, ViewSettings, show_volume
from medvl.scans.views.stack import FrameView, MontageView, volume_to_frames, volume_to_montage

__all__ = [
    "VIEWS",
    "FrameView",
    "MIPView",
    "MontageView",
    "Orientation",
    "PlaneMap",
    "Resample",
    "SliceView",
    "ViewName",
    "ViewSettings",
    "draw_box",
    "scan_to_image",
    "show_volume",
    "to_uint8",
    "volume_to_frames",
    "volume_to_mip",
    "volume_to_montage",
    "volume_to_slice",
]
