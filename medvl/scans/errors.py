"""Errors raised by :mod:`medvl.scans`."""

from __future__ import annotations

__all__ = ["ScanError"]


class ScanError(ValueError):
    """A scan could not be loaded: the message names the file and what is wrong with it.

    The reader's own exception, when there is one, is chained as ``__cause__`` so the full
    traceback stays available for debugging while users see one readable line first.
    """
