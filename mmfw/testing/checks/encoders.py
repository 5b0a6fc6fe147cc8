"""Vision-encoder contracts: one feature row per patch of the grid its ``spec`` announces, of width
``spec.embed_dim``; gradients reach every trainable parameter; ``dtype`` is obeyed."""

from __future__ import annotations

import torch

from mmfw.encoders.base import VisionEncoder
from mmfw.testing.core import ComponentUnderTest, contract, listing, missing_grads

KIND = "vision_encoders"


def build(cut: ComponentUnderTest, cfg=None, seed: int = 0) -> VisionEncoder:
    torch.manual_seed(seed)
    return cut.run("building it", lambda: cut.registries.vision_encoders.build(cfg or cut.config),
                   "the encoder must build from its example() config offline")


def encoder(cut: ComponentUnderTest) -> VisionEncoder:
    return cut.cached("encoder", lambda: build(cut))


def _check_rows(cut: ComponentUnderTest, enc: VisionEncoder, out: torch.Tensor, n: int, h: int, w: int) -> None:
    rows, cols = enc.spec.grid(h, w)
    expected = (n, rows * cols, enc.spec.embed_dim)
    cut.require(tuple(out.shape) == expected,
                f"forward of {n} images of {h}x{w} pixels returned shape {tuple(out.shape)} but the spec announces "
                f"{expected} (a {rows}x{cols} patch grid of width {enc.spec.embed_dim})",
                "forward must return one row per patch (drop CLS/register tokens), spec.grid(h, w) must give the "
                "patch grid and spec.embed_dim the width")


@contract(KIND, "spec")
def spec(cut: ComponentUnderTest) -> None:
    """``spec`` is sane: three-channel mean/std, a patch no larger than the image, ``embed_dim`` = spec width."""
    enc = encoder(cut)
    s = enc.spec
    cut.require(len(s.mean) == 3 and len(s.std) == 3 and min(s.std) > 0, f"spec mean {s.mean} / std {s.std}",
                "give three per-channel values, std > 0")
    cut.require(min(s.image_size) >= s.patch_size > 0, f"spec image_size {s.image_size}, patch_size {s.patch_size}",
                "the patch must be positive and fit the native image size")
    cut.require(enc.embed_dim == s.embed_dim > 0, f"embed_dim {enc.embed_dim} vs spec.embed_dim {s.embed_dim}",
                "embed_dim must equal spec.embed_dim (the connector is built with it)")


@contract(KIND, "output-shape")
def output_shape(cut: ComponentUnderTest) -> None:
    """At the native size, forward returns ``(N, rows*cols, embed_dim)`` finite features."""
    enc = encoder(cut)
    h, w = enc.spec.image_size
    out = cut.run("forward", lambda: enc(torch.randn(2, 3, h, w)), "forward(pixel_values) must accept (N, 3, H, W)")
    _check_rows(cut, enc, out, 2, h, w)
    cut.require(torch.isfinite(out).all(), "forward returned non-finite values", "check the initialisation")


@contract(KIND, "dynamic-sizes")
def dynamic_sizes(cut: ComponentUnderTest) -> None:
    """A ``dynamic_size`` encoder accepts non-native, non-square sizes with the grid ``spec.grid`` gives."""
    enc = encoder(cut)
    if not enc.spec.dynamic_size:
        cut.not_applicable("a fixed-size encoder (spec.dynamic_size is false)")
    p = enc.spec.patch_size
    for h, w in [(3 * p, 5 * p), (5 * p + 3, 2 * p - 1), (p, 7 * p)]:
        out = cut.run(f"forward at {h}x{w}", lambda h=h, w=w: enc(torch.randn(1, 3, h, w)),
                      "spec.dynamic_size=True promises any input size (interpolate position embeddings)")
        _check_rows(cut, enc, out, 1, h, w)


@contract(KIND, "samples-independent")
def samples_independent(cut: ComponentUnderTest) -> None:
    """In eval mode, an image's features do not depend on the other images of the batch."""
    enc = encoder(cut)
    h, w = enc.spec.image_size
    x = torch.randn(2, 3, h, w)
    enc.eval()
    with torch.no_grad():
        both, alone = enc(x)[1:], enc(x[1:])
    cut.require(torch.allclose(both, alone, atol=1e-5, rtol=1e-4),
                "the features of image 1 change when image 0 is in the same batch",
                "samples must not attend to or normalise over each other")


@contract(KIND, "gradients")
def gradients(cut: ComponentUnderTest) -> None:
    """Gradients reach every trainable parameter (DDP rejects parameters without one)."""
    enc = build(cut)
    h, w = enc.spec.image_size
    enc.train()
    cut.run("backward", lambda: enc(torch.randn(2, 3, h, w)).pow(2).mean().backward(), "forward must be differentiable")
    missing = missing_grads(enc.named_parameters())
    cut.require(not missing, f"trainable parameters {listing(missing)} received no gradient",
                "every trainable parameter must take part in forward: delete the parts after the feature layer "
                "(heads, final norms) or freeze them")


@contract(KIND, "dtype")
def dtype(cut: ComponentUnderTest) -> None:
    """A ``dtype: bfloat16`` config gives bfloat16 parameters and outputs, also from float32 pixels."""
    cfg = cut.config
    if "dtype" not in type(cfg).model_fields:
        cut.fail("the config has no 'dtype' field", "vision encoder configs take dtype: float32 | bfloat16 | float16")
    cfg = type(cfg).model_validate({**cfg.model_dump(), "dtype": "bfloat16"})
    enc = build(cut, cfg)
    dtypes = {p.dtype for p in enc.parameters() if p.is_floating_point()}
    cut.require(dtypes == {torch.bfloat16}, f"dtype bfloat16 gave parameters of {sorted(map(str, dtypes))}",
                "cast the module to the config's dtype")
    cut.require(enc.dtype == torch.bfloat16, f"encoder.dtype is {enc.dtype}", "dtype must report the weights' dtype")
    h, w = enc.spec.image_size
    out = cut.run("forward of float32 pixels", lambda: enc(torch.randn(1, 3, h, w)),
                  "cast pixel_values to the encoder's dtype in forward")
    cut.require(out.dtype == torch.bfloat16, f"a bfloat16 encoder returned {out.dtype}",
                "return features in the encoder's dtype")
    _check_rows(cut, enc, out, 1, h, w)


@contract(KIND, "layer-groups")
def layer_groups(cut: ComponentUnderTest) -> None:
    """``layer_groups()`` lists the transformer blocks: distinct submodules, in order (for "unfreeze the last N")."""
    enc = encoder(cut)
    groups = enc.layer_groups()
    cut.require(groups, "layer_groups() is empty", "return the encoder's transformer blocks in order")
    modules = {id(m) for m in enc.modules()}
    cut.require(all(id(g) in modules for g in groups) and len({id(g) for g in groups}) == len(groups),
                "layer_groups() returns modules that are not distinct submodules of the encoder",
                "return the encoder's own blocks, each once")


@contract(KIND, "state-dict-round-trip")
def state_dict_round_trip(cut: ComponentUnderTest) -> None:
    """Loading one instance's ``state_dict`` into another gives the same features (checkpoints restore it)."""
    enc, other = build(cut, seed=0), build(cut, seed=1)
    cut.run("load_state_dict", lambda: other.load_state_dict(enc.state_dict()),
            "two builds of the same config must have the same state_dict keys and shapes")
    h, w = enc.spec.image_size
    x = torch.randn(1, 3, h, w)
    enc.eval(), other.eval()
    with torch.no_grad():
        same = torch.allclose(other(x), enc(x))
    cut.require(same, "features differ after loading the other instance's state_dict",
                "everything forward depends on must be in the state_dict (parameters or persistent buffers)")
