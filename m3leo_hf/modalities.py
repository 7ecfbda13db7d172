"""The one place the read side looks up modality declarations (name, label kind, class codes, variable axis)."""

from __future__ import annotations

from builders.registry import Modality, get_modality


def declaration(modality: str | Modality) -> Modality:
    """The declaration of ``modality``: given (a region publishes its own, ``metadata/<name>.modality.json``),
    else the package's catalogue by name or alias (``KeyError`` naming the known families when unknown)."""
    return modality if isinstance(modality, Modality) else get_modality(modality)
