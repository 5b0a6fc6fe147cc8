"""``data.augment``: declared transforms, applied to training images only, size (hence token count) preserved,
deterministic per (seed, epoch, sample, image), and ``mmfw data show --augment``."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.config.augment import ImageAugmentConfig
from mmfw.data.augment import ImageAugmenter
from mmfw.data.dataset import build_dataset
from mmfw.model.builder import build_model

AUGMENT = {"random_resized_crop": {"scale": [0.5, 1.0]}, "color_jitter": {"brightness": 0.4, "hue": 0.1},
           "rand_augment": {"num_ops": 2, "magnitude": 9}}


def _image(w: int = 48, h: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_deterministic_per_seed_epoch_sample_and_image() -> None:
    aug = ImageAugmenter(ImageAugmentConfig.model_validate(AUGMENT), seed=3)
    img = _image()
    first = _pixels(aug(img, 5, 0))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = _pixels(aug(img, 5, 0))
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is left as it was
    assert np.array_equal(first, again)
    assert not np.array_equal(first, _pixels(aug(img, 6, 0)))
    assert not np.array_equal(first, _pixels(aug(img, 5, 1)))
    aug.set_epoch(1)
    assert not np.array_equal(first, _pixels(aug(img, 5, 0)))
    other_seed = ImageAugmenter(ImageAugmentConfig.model_validate(AUGMENT), seed=4)
    assert not np.array_equal(first, _pixels(other_seed(img, 5, 0)))


@pytest.mark.parametrize("size", [(48, 32), (20, 70)])
def test_every_transform_keeps_the_size(size) -> None:
    for key, value in AUGMENT.items():
        aug = ImageAugmenter(ImageAugmentConfig.model_validate({key: value}), seed=0)
        for sample in range(5):
            assert aug(_image(*size), sample).size == size


@pytest.mark.parametrize("augment, message", [
    ({}, "names no transform"),
    ({"random_resized_crop": {"scale": [0.5, 1.5]}}, "expected 0 < min <= max <= 1"),
    ({"rand_augment": {"magnitude": 31}}, "must be below num_magnitude_bins"),
    ({"color_jitter": {"brightnes": 0.2}}, "brightnes"),
])
def test_config_errors(augment, message) -> None:
    with pytest.raises(ValueError, match=message):
        ImageAugmentConfig.model_validate(augment)


def test_feature_cache_and_augment_are_refused(tiny_experiment, registries, tmp_path) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["data"]["augment"] = AUGMENT
    exp["training"]["policy"] = {"vision_encoder": "frozen"}
    exp["training"]["feature_cache"] = str(tmp_path / "cache")
    with pytest.raises(Exception, match="feature_cache with data.augment"):
        load_config_dict(exp, registries)


def test_augmented_sample_keeps_its_tokens_and_only_pixels_change(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["image_strategy"] = {"type": "anyres", "grid_pinpoints": [[32, 64], [64, 32], [64, 64]]}
    cfg = load_config_dict(exp, registries)
    model, tok = build_model(cfg.model, registries)
    ds = build_dataset(cfg.data.train, cfg.data, tok, model.image_strategy, image_token="<image>")
    plain = [ds[i] for i in range(4)]
    ds.augment = ImageAugmenter(ImageAugmentConfig.model_validate(AUGMENT), seed=0)
    augmented = [ds[i] for i in range(4)]
    for p, a in zip(plain, augmented, strict=True):
        assert torch.equal(p["input_ids"], a["input_ids"]) and torch.equal(p["labels"], a["labels"])
        assert p["images"][0].pixel_values.shape == a["images"][0].pixel_values.shape
        assert not torch.equal(p["images"][0].pixel_values, a["images"][0].pixel_values)
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["images"][0].pixel_values, augmented[0]["images"][0].pixel_values)


def test_data_show_writes_an_augmented_png(tiny_experiment, tmp_path, capsys) -> None:
    exp = copy.deepcopy(tiny_experiment)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["data", "show", str(path), "--index", "0", "--augment", str(tmp_path / "a.png")]) == 2
    assert "--augment: data.augment is not set in the config" in capsys.readouterr().err
    exp["data"]["augment"] = AUGMENT
    path.write_text(yaml.safe_dump(exp))
    out = tmp_path / "shown" / "a.png"
    assert main(["data", "show", str(path), "--index", "0", "--augment", str(out)]) == 0
    assert f"augmented image 0 (epoch 0): {out}" in capsys.readouterr().out
    assert main(["data", "show", str(path), "--index", "0", "--augment", str(tmp_path / "b.png"),
                 "--epoch", "2"]) == 0
    shown, later = Image.open(out), Image.open(tmp_path / "b.png")
    assert shown.format == "PNG" and shown.size == later.size == (32, 32)
    assert not np.array_equal(np.asarray(shown), np.asarray(later))
