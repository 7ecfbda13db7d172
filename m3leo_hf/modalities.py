"""The one place the read side looks up modality declarations (name, label kind, class codes, variable axis)."""

from __future__ import annotations

from builders.registry import Modality, get_modality


def declaration(name: str) -> Modality:
    """The declaration of modality ``name`` (``KeyError`` naming the known ones when unknown)."""
    return get_modality(name)
