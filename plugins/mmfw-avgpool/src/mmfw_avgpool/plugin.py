"""The plugin module named by the ``mmfw.plugins`` entry point: registers the components of this package."""

from mmfw import hookimpl
from mmfw.components import Registries
from mmfw_avgpool.connector import AvgPoolConnector


@hookimpl
def mmfw_register_components(registries: Registries) -> None:
    registries.connectors.register(AvgPoolConnector)
