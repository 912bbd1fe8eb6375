"""Pipeline configuration: the pydantic schema (schema/, a module per section), its YAML loader (loader.py)
and the profiles."""

from pipeline_config.loader import ConfigError, load_config
from pipeline_config.schema import (
    OPTIMIZER_NAMES,
    SCHEDULER_TYPES,
    FolderSource,
    GGUFSource,
    HubSource,
    ModelConfig,
    ModelSource,
    PipelineConfig,
    ScratchSource,
    SplitConfig,
)

__all__ = [
    "OPTIMIZER_NAMES",
    "SCHEDULER_TYPES",
    "SplitConfig",
    "ConfigError",
    "FolderSource",
    "GGUFSource",
    "HubSource",
    "ModelConfig",
    "ModelSource",
    "PipelineConfig",
    "ScratchSource",
    "load_config",
]
