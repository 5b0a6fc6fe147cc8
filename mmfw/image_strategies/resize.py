"""``resize``: squash the image to the encoder's input size (bicubic), then normalise (OmniLMM's eval transform)."""

from __future__ import annotations

from typing import Literal

from PIL import Image
from pydantic import Field
from typing_extensions import Self

from mmfw.image_strategies.base import (
    ImageInput,
    ImageStrategy,
    PixelStrategyConfig,
    VisionGeometry,
    normalise_uint8_fused,
    resize_uint8,
    to_tensor,
    uint8_pixels,
)
from mmfw.interop import HFLlavaPart, image_processor_kwargs
from mmfw.registry import component

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}


class ResizeStrategyConfig(PixelStrategyConfig):
    type: Literal["resize"] = "resize"
    size: int | None = Field(None, gt=0)
    """Square input size; defaults to the encoder's native size (another size needs a dynamic-size encoder)."""

    @classmethod
    def example(cls) -> Self:
        return cls()


@component("resize", config=ResizeStrategyConfig)
class ResizeStrategy(ImageStrategy):
    def __init__(self, cfg: ResizeStrategyConfig, geometry: VisionGeometry, hidden_size: int) -> None:
        super().__init__(cfg, geometry, hidden_size)
        spec = geometry.spec
        if cfg.size is not None and (cfg.size, cfg.size) != spec.image_size and not spec.dynamic_size:
            raise ValueError(f"image_strategy.size {cfg.size} differs from the encoder's fixed input size "
                             f"{spec.image_size}")
        self.input_size = (cfg.size, cfg.size) if cfg.size else spec.image_size

    def resize(self, image: Image.Image) -> Image.Image:
        h, w = self.input_size
        image = image if image.mode == "RGB" else image.convert("RGB")
        return image.resize((w, h), RESAMPLE[self.cfg.interpolation])

    def preprocess(self, image: Image.Image) -> ImageInput:
        spec = self.geometry.spec
        if self.cfg.backend == "torch":
            pixels = normalise_uint8_fused(resize_uint8(uint8_pixels(image), self.input_size,
                                                        self.cfg.interpolation), spec.mean, spec.std)
        else:
            pixels = to_tensor(self.resize(image), spec.mean, spec.std)
        return ImageInput(pixel_values=pixels.unsqueeze(0), size=image.size)

    def num_tokens(self, size: tuple[int, int]) -> int:
        return self.geometry.tile_tokens(*self.input_size)

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' ``CLIPImageProcessor`` resizing straight to the input size (no crop)."""
        from transformers import CLIPImageProcessor


        spec = self.geometry.spec
        h, w = self.input_size
        processor = CLIPImageProcessor(size={"height": h, "width": w}, do_center_crop=False,
                                       crop_size={"height": h, "width": w},
                                       **image_processor_kwargs(spec.mean, spec.std, self.cfg.interpolation))
        return HFLlavaPart(image_processor=processor, formats=("hf-llava",))
