"""Fixtures of the transformers parity tests (helpers live in ``parity_utils``)."""

from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Three real photographs of different sizes and orientations (scikit-image's sample data)."""
    from skimage import data

    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("astronaut", "chelsea", "coffee")}
