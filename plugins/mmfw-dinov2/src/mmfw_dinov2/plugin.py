"""The plugin module named by the ``mmfw.plugins`` entry point: registers the DINOv2 encoder."""

from mmfw import hookimpl
from mmfw.components import Registries
from mmfw_dinov2.encoder import DINOv2VisionEncoder


@hookimpl
def mmfw_register_components(registries: Registries) -> None:
    registries.vision_encoders.register(DINOv2VisionEncoder)
