"""Find and remove the temp files of writers that died (placeholder until the sweep lands)."""

from __future__ import annotations


def clean_stale_temps() -> None:
    raise NotImplementedError
