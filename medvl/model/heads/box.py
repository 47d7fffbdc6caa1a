"""``BoxHead``: a box regressed from the hidden state of a ``<|box|>`` token, 2D or 3D.

The head is an MLP on the LM's last-layer state at the token (gather it with
:func:`medvl.model.heads.gather_token_states`)::

    state (N, D) -> Linear(D, H) -> GELU -> Linear(H, 2 * dim) -> centre, size (sigmoid)
                 -> corners [centre - size / 2, centre + size / 2], clamped into [0, 1]

Boxes follow medvl's convention: normalised, corners on edges, ``[x1, y1, x2, y2]`` for ``dim=2``
(x across and y down the displayed image) and ``[x1, y1, z1, x2, y2, z2]`` for ``dim=3`` (array axes
0, 1, 2 of the RAS volume, not of a view's frames). The parametrisation makes every output a valid
box, ``0 <= lower <= upper <= 1``, so MONAI's GIoU never sees an inverted box.
"""

from __future__ import annotations

import torch
from torch import nn


def _clamp_straight_through(x: torch.Tensor) -> torch.Tensor:
    # The value is clamped into [0, 1], the gradient passes as if it were not: a plain clamp would
    # zero the gradient of a corner that overshoots the image, and the L1 term could never pull it
    # back. Clamping is monotone, so lower <= upper survives it.
    return x + (x.clamp(0.0, 1.0) - x).detach()


class BoxHead(nn.Module):
    """Regress one normalised box per grounding-token hidden state.

    Args:
        hidden_size: Width ``D`` of the LM hidden states.
        dim: 2 for ``[x1, y1, x2, y2]``, 3 for ``[x1, y1, z1, x2, y2, z2]``.
        mlp_size: Width of the MLP's hidden layer; default ``hidden_size``.
    """

    def __init__(self, hidden_size: int, dim: int = 2, mlp_size: int | None = None) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {dim}")
        self.hidden_size = hidden_size
        self.dim = dim
        mlp_size = mlp_size or hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_size), nn.GELU(), nn.Linear(mlp_size, 2 * dim)
        )
        # Start at centred boxes of half the extent (sigmoid(0) = 0.5): a sensible prior, and far
        # from the sigmoid's flat tails.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Boxes for hidden states.

        Args:
            states: ``(..., D)`` hidden states, any dtype (cast to the head's).

        Returns:
            ``(..., 2 * dim)`` boxes in [0, 1], lower corner first.
        """
        raw = self.mlp(states.to(self.mlp[0].weight.dtype))
        centre, size = raw.sigmoid().split(self.dim, dim=-1)
        lower, upper = centre - size / 2, centre + size / 2
        return _clamp_straight_through(torch.cat([lower, upper], dim=-1))
