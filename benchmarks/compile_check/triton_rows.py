"""Compile-gate rows of the triton backend (see rows.py for the contract)."""
from __future__ import annotations


def rows(spec, cases, jobs):
    """One Row per kernel launch the triton backend would issue for each case on `spec`."""
    raise NotImplementedError("the triton rows of the compile gate are not written yet")
