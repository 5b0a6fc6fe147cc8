"""``data.augment``: train-time image augmentation (torchvision transforms v2), declared in the config.

Every transform keeps the image's size, so an augmented image becomes exactly as many tokens as the original (the
image strategy sees the same geometry); see :mod:`mmfw.data.augment` for how they are applied.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from mmfw.config.base import StrictModel


class RandomResizedCropConfig(StrictModel):
    """Crop a random area of the image and resize it back to the image's own size."""

    scale: tuple[float, float] = (0.5, 1.0)
    """Range of the crop's area, as a share of the image's area."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of the crop's aspect ratio (width / height)."""

    @model_validator(mode="after")
    def _ranges(self) -> RandomResizedCropConfig:
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale {list(self.scale)}: expected 0 < min <= max <= 1")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio {list(self.ratio)}: expected 0 < min <= max")
        return self


class ColorJitterConfig(StrictModel):
    """Random brightness, contrast, saturation and hue (torchvision ``ColorJitter`` factors)."""

    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.4, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class RandAugmentConfig(StrictModel):
    """``num_ops`` random operations of strength ``magnitude`` (out of ``num_magnitude_bins - 1``), as OmniLMM's
    training transform (``randaug=True``)."""

    num_ops: int = Field(2, ge=1)
    magnitude: int = Field(9, ge=0)
    num_magnitude_bins: int = Field(31, ge=2)

    @model_validator(mode="after")
    def _magnitude(self) -> RandAugmentConfig:
        if self.magnitude >= self.num_magnitude_bins:
            raise ValueError(f"magnitude {self.magnitude} must be below num_magnitude_bins {self.num_magnitude_bins}")
        return self


class ImageAugmentConfig(StrictModel):
    """Augmentation of training images, applied in this order: crop, colour jitter, RandAugment. Evaluation and
    inference images are never augmented; a sample's augmentation is a function of (seed, epoch, sample, image)."""

    random_resized_crop: RandomResizedCropConfig | None = None
    color_jitter: ColorJitterConfig | None = None
    rand_augment: RandAugmentConfig | None = None

    @model_validator(mode="after")
    def _something(self) -> ImageAugmentConfig:
        if self.random_resized_crop is None and self.color_jitter is None and self.rand_augment is None:
            raise ValueError("names no transform; set random_resized_crop, color_jitter or rand_augment (or drop "
                             "augment)")
        return self
