"""Pipeline configuration: pydantic schema + YAML profiles. See schema.py."""

from pipeline_config.schema import (
    OPTIMIZER_NAMES,
    SCHEDULER_TYPES,
    ConfigError,
    FolderSource,
    GGUFSource,
    HubSource,
    ModelConfig,
    ModelSource,
    PipelineConfig,
    ScratchSource,
    load_config,
)

__all__ = [
    "OPTIMIZER_NAMES",
    "SCHEDULER_TYPES",
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
