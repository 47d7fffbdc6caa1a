"""medvl: medical vision-language models.

Layers (each imports only the ones before it): ``medvl.scans`` <- ``medvl.data`` <-
``medvl.model`` <- ``medvl.train`` / ``medvl.eval`` <- ``medvl.cli`` and ``demo/``.
"""

__version__ = "0.1.0"
