"""Pipeline configuration: pydantic schema + YAML profiles. See schema.py."""

from pipeline_config.schema import ConfigError, PipelineConfig, load_config

__all__ = ["ConfigError", "PipelineConfig", "load_config"]
