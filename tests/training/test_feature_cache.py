"""The align-stage feature cache: the frozen encoder runs on the first epoch only; later epochs (and later runs)
read its features from disk, and training is unchanged."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.config.base import VisionEncoderConfig
from mmfw.training.feature_cache import EncoderFeatureCache, tile_key
from mmfw.training.trainer import Trainer


def _align(experiment: dict, run_dir, cache=None) -> dict:
    exp = dict(experiment, output_dir=str(run_dir))
    exp["data"] = {**experiment["data"], "eval": []}
    exp["training"] = {**experiment["training"], "max_steps": None, "epochs": 2, "feature_cache": cache,
                       "policy": {"vision_encoder": "frozen", "connector": "full", "llm": "frozen"}}
    return exp


@pytest.mark.slow
def test_second_epoch_and_second_run_skip_the_encoder(experiment, registries, tmp_path) -> None:
    cache = tmp_path / "cache"
    plain = Trainer(load_config_dict(_align(experiment, tmp_path / "plain"), registries), registries, progress=False)
    plain.train()
    cached = Trainer(load_config_dict(_align(experiment, tmp_path / "cached", str(cache)), registries), registries,
                     progress=False)
    cached.train()
    assert cached.state.total_steps == 12  # 2 epochs of 6 batches
    assert (cached.feature_cache.misses, cached.feature_cache.hits) == (48, 48)  # 48 images, seen twice
    (fingerprint,) = [p for p in cache.iterdir() if p.is_dir()]
    stored = sum(len(load_file(str(f))) for f in fingerprint.glob("*.safetensors"))
    assert stored == 48
    w_plain = load_file(str(tmp_path / "plain/model/model.safetensors"))
    w_cached = load_file(str(tmp_path / "cached/model/model.safetensors"))
    for k in w_plain:
        torch.testing.assert_close(w_cached[k], w_plain[k], atol=1e-5, rtol=1e-4)

    again = Trainer(load_config_dict(_align(experiment, tmp_path / "again", str(cache)), registries), registries,
                    progress=False)
    again.train()
    assert (again.feature_cache.misses, again.feature_cache.hits) == (0, 96)


def test_cache_is_keyed_by_encoder_weights_and_pixels(tmp_path) -> None:
    class Enc(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = VisionEncoderConfig(type="fake")  # the contract's config, hashed into the cache key
            self.proj = torch.nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.proj(x)

    torch.manual_seed(0)
    enc = Enc()
    cache = EncoderFeatureCache(tmp_path, enc).install()
    x = torch.randn(5, 2, 4)
    first = enc(x)
    second = enc(x)
    assert enc.calls == 1 and torch.equal(first, second)
    torch.testing.assert_close(first, enc.proj(x))
    cache.close()
    assert tile_key(x[0]) != tile_key(x[0] + 1e-6)
    with torch.no_grad():
        enc.proj.weight.add_(1.0)  # other weights: another cache directory, no stale features
    other = EncoderFeatureCache(tmp_path, enc)
    assert other.dir != cache.dir and not other.index
