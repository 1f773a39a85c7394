"""Lattice Workers: a Trio supervisor that runs workers against tasks on a Lattice board.

Subpackages follow the architecture (SPEC section 1): ``store`` (the board format),
``protocol`` (wire types and clients), ``supervisor`` (the long-running process),
``actors`` (one run each), ``cli`` (the thin ``lattice`` command).
"""

__version__ = "0.1.0"
