"""``pad`` (LLaVA ``expand2square``): pad the short side with the mean colour, image centred, then resize.

Keeps the aspect ratio; after normalisation the padded area is exactly 0.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image
from typing_extensions import Self

from mmfw.errors import ExportError
from mmfw.image_strategies.base import (
    ImageInput,
    ImageStrategy,
    PixelStrategyConfig,
    normalise_uint8_fused,
    paste_uint8,
    resize_uint8,
    to_tensor,
    uint8_pixels,
)
from mmfw.image_strategies.resize import RESAMPLE
from mmfw.interop import HFLlavaPart, image_processor_kwargs
from mmfw.registry import component


class PadStrategyConfig(PixelStrategyConfig):
    type: Literal["pad"] = "pad"

    @classmethod
    def example(cls) -> Self:
        return cls()


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the shorter side so the image is square, original centred (LLaVA's ``expand2square``)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


@component("pad", config=PadStrategyConfig)
class PadStrategy(ImageStrategy):
    def preprocess(self, image: Image.Image) -> ImageInput:
        spec = self.geometry.spec
        fill = tuple(int(m * 255) for m in spec.mean)
        h, w = spec.image_size
        if self.cfg.backend == "torch":
            pixels = uint8_pixels(image)
            ih, iw = pixels.shape[-2:]
            side = max(ih, iw)
            square = paste_uint8(pixels, (side, side), fill, ((side - ih) // 2, (side - iw) // 2))
            out = normalise_uint8_fused(resize_uint8(square, (h, w), self.cfg.interpolation), spec.mean, spec.std)
        else:
            square = expand_to_square(image, fill)
            out = to_tensor(square.resize((w, h), RESAMPLE[self.cfg.interpolation]), spec.mean, spec.std)
        return ImageInput(pixel_values=out.unsqueeze(0), size=image.size)

    def num_tokens(self, size: tuple[int, int]) -> int:
        return self.geometry.tile_tokens(*self.geometry.spec.image_size)

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' ``LlavaImageProcessor`` with ``do_pad`` (pad to square with the mean colour, then resize)."""
        from transformers import LlavaImageProcessor


        spec = self.geometry.spec
        h, w = spec.image_size
        if h != w:
            raise ExportError(f"LlavaImageProcessor needs a square encoder input, not {h}x{w}")
        processor = LlavaImageProcessor(do_pad=True, size={"shortest_edge": h}, crop_size={"height": h, "width": w},
                                        **image_processor_kwargs(spec.mean, spec.std, self.cfg.interpolation))
        return HFLlavaPart(image_processor=processor, formats=("hf-llava",))
