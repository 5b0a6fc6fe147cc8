"""Declarative configs: pydantic models, YAML loading with inheritance and overrides, located errors."""

from mmfw.config.base import (
    ComponentConfig,
    ConnectorConfig,
    ImageStrategyConfig,
    LLMConfig,
    StrictModel,
    VisionEncoderConfig,
)
from mmfw.config.experiment import (
    DataConfig,
    DatasetSpec,
    ExperimentConfig,
    FusionConfig,
    ModelConfig,
    TrainingConfig,
    experiment_config_class,
)
from mmfw.config.loader import ConfigError, dump_config, load_config, load_config_dict, save_config

__all__ = [
    "ComponentConfig", "ConnectorConfig", "ImageStrategyConfig", "LLMConfig", "StrictModel", "VisionEncoderConfig",
    "DataConfig", "DatasetSpec", "ExperimentConfig", "FusionConfig", "ModelConfig", "TrainingConfig",
    "experiment_config_class", "ConfigError", "dump_config", "load_config", "load_config_dict", "save_config",
]
