"""The pipeline's configuration schema: one pydantic model per stage section, one module per section.

Every model forbids unknown keys, so a typo fails at flow start with the key's name, the YAML file and
its line, instead of being ignored. loader.py reads YAML profiles into these models. A name that must be
one of a registry's (a template, a teacher backend, a sandbox backend, an optimizer) is checked with
`base.one_of`, which reads the registry: nothing here lists them again.

    base.py        Section, one_of and the shared checks
    model.py       model: the source kinds, the architecture, the miniature
    scrape.py      scrape        synthesize.py  synthesize (teacher, Self-/OSS-Instruct, verify)
    clean.py       clean         tokenize.py    split, tokenize
    datasets.py    datasets (the user's own data: hub, files, save_to_disk; formats, the mix)
    train.py       train         evaluate.py    evaluate (the pass@k benchmarks, completion)
    register.py    register      runtime.py     executor, sandbox
    pipeline.py    PipelineConfig and the rules across sections
"""

from pipeline_config.schema.base import Section, one_of
from pipeline_config.schema.clean import (
    BenchmarkFile,
    CleanConfig,
    CodeHeuristicsConfig,
    DecontaminateConfig,
    NearDedupConfig,
)
from pipeline_config.schema.datasets import DatasetSource
from pipeline_config.schema.evaluate import CompletionConfig, EvaluateConfig, PassAtKConfig
from pipeline_config.schema.model import (
    ARCHITECTURE_LINEAR_MODULES,
    SOURCE_KINDS,
    FolderSource,
    GGUFSource,
    HubSource,
    MiniatureSection,
    ModelConfig,
    ModelSource,
    ScratchSource,
)
from pipeline_config.schema.pipeline import PipelineConfig, evaluated_metrics
from pipeline_config.schema.register import GuardConfig, RegisterConfig
from pipeline_config.schema.runtime import ExecutorConfig, SandboxConfig
from pipeline_config.schema.scrape import ScrapeConfig, WebScrapeConfig
from pipeline_config.schema.synthesize import (
    OssInstructConfig,
    SelfInstructConfig,
    SynthesizeConfig,
    TeacherConfig,
    VerifyConfig,
)
from pipeline_config.schema.tokenize import SplitConfig, TokenizeConfig
from pipeline_config.schema.train import (
    OPTIMIZER_NAMES,
    SCHEDULER_TYPES,
    LoraSection,
    QuantizationSection,
    TrainConfig,
)

__all__ = [
    "ARCHITECTURE_LINEAR_MODULES",
    "OPTIMIZER_NAMES",
    "SCHEDULER_TYPES",
    "SOURCE_KINDS",
    "BenchmarkFile",
    "CleanConfig",
    "CodeHeuristicsConfig",
    "CompletionConfig",
    "DatasetSource",
    "DecontaminateConfig",
    "EvaluateConfig",
    "ExecutorConfig",
    "FolderSource",
    "GGUFSource",
    "GuardConfig",
    "HubSource",
    "LoraSection",
    "MiniatureSection",
    "ModelConfig",
    "ModelSource",
    "NearDedupConfig",
    "OssInstructConfig",
    "PassAtKConfig",
    "PipelineConfig",
    "QuantizationSection",
    "RegisterConfig",
    "SandboxConfig",
    "ScrapeConfig",
    "ScratchSource",
    "Section",
    "SelfInstructConfig",
    "SplitConfig",
    "SynthesizeConfig",
    "TeacherConfig",
    "TokenizeConfig",
    "TrainConfig",
    "VerifyConfig",
    "WebScrapeConfig",
    "evaluated_metrics",
    "one_of",
]
