"""Toy families that show what adding a family takes: one file each, imported here once (``conftest.py`` imports
this package), and one entry in ``FAMILY_CONFIGS`` of ``tests/test_contract.py``. Nothing else in genlab or the
tests names them; the contract and pipeline tests pick them up from the registry like the real families."""
from families import toy_pixels, toy_positions  # noqa: F401
