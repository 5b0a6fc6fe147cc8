"""Tests for image loading (mmfw.data.images): every mode becomes 8-bit RGB; every broken file a located reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmfw.data.errors import RecordError
from mmfw.data.images import load_image, to_rgb


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("name", "make", "pixel"),
    [
        ("rgb.png", lambda: Image.new("RGB", (6, 4), (10, 20, 30)), (10, 20, 30)),
        ("grey.png", lambda: Image.new("L", (6, 4), 77), (77, 77, 77)),
        ("bw.png", lambda: Image.new("1", (6, 4), 1), (255, 255, 255)),
        ("cmyk.jpg", lambda: Image.new("CMYK", (6, 4), (0, 0, 0, 0)), (255, 255, 255)),
        # transparent pixels are composited on white, opaque ones keep their colour
        ("rgba.png", lambda: Image.new("RGBA", (6, 4), (200, 0, 0, 0)), (255, 255, 255)),
        ("rgba_opaque.png", lambda: Image.new("RGBA", (6, 4), (200, 0, 0, 255)), (200, 0, 0)),
        ("la.png", lambda: Image.new("LA", (6, 4), (50, 255)), (50, 50, 50)),
        # 16-bit greyscale is scaled to 8 bits, not clipped to white
        ("grey16.png", lambda: Image.fromarray(np.full((4, 6), 65535 // 2, dtype=np.uint16)), (127, 127, 127)),
        ("grey16.tiff", lambda: Image.fromarray(np.full((4, 6), 257 * 40, dtype=np.uint16)), (40, 40, 40)),
        ("float.tiff", lambda: Image.new("F", (6, 4), 0.5), (128, 128, 128)),
    ],
)
def test_every_mode_becomes_8bit_rgb(tmp_path: Path, name: str, make, pixel) -> None:
    image = load_image(_save(make(), tmp_path / name))
    assert image.mode == "RGB" and image.size == (6, 4)
    assert image.getpixel((0, 0)) == pytest.approx(pixel, abs=2)


def test_palette_with_transparency(tmp_path: Path) -> None:
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0  # palette entry 0 (green) is transparent
    image = load_image(_save(p, tmp_path / "p.png", transparency=0))
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((1, 1)) == (255, 0, 0)


def test_loaded_image_outlives_its_file(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (3, 3), (1, 2, 3)), tmp_path / "a.png")
    image = load_image(path)
    path.unlink()
    assert np.asarray(image).shape == (3, 3, 3)


def _file(name: str, data: bytes):
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _truncated_png(tmp_path: Path) -> Path:
    src = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
                tmp_path / "full.png")
    data = src.read_bytes()
    out = tmp_path / "half.png"
    out.write_bytes(data[:len(data) // 2])
    return out


@pytest.mark.parametrize(
    ("make", "reason", "match"),
    [
        (lambda d: d / "nope.png", "missing-image", "not found"),
        (lambda d: d, "missing-image", "is a directory"),
        (_file("empty.png", b""), "empty-image", "0 bytes"),
        (_file("junk.png", b"not an image at all"), "corrupt-image", "cannot decode"),
        (_truncated_png, "corrupt-image", "truncated"),
    ],
)
def test_broken_files_have_a_reason(tmp_path: Path, make, reason: str, match: str) -> None:
    path = make(tmp_path)
    with pytest.raises(RecordError, match=match) as info:
        load_image(path)
    assert info.value.reason_code == reason
    assert str(path) in info.value.message


def test_zero_sized_image() -> None:
    with pytest.raises(RecordError) as info:
        to_rgb(Image.new("RGB", (0, 5)))
    assert info.value.reason_code == "empty-image" and "0x5" in info.value.message


def test_decompression_bomb(tmp_path: Path, monkeypatch) -> None:
    path = _save(Image.new("L", (64, 64)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 px > 2 x 100: an error, not a warning
    with pytest.raises(RecordError) as info:
        load_image(path)
    assert info.value.reason_code == "image-too-large"
