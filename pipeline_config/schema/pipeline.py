"""The whole profile, `PipelineConfig`, and the rules that join sections: the window the model has against
tokenize.max_length, the LoRA targets against model.architecture, and the gate's metrics against what the
evaluation computes (`evaluated_metrics`)."""

from __future__ import annotations

import warnings

from pydantic import field_validator, model_validator

from pipeline_config.metrics import BASELINES, PASS_K_SUITES, SUITES, pass_k_metrics, scores_baseline
from pipeline_config.metrics import parse as parse_metric
from pipeline_config.schema.base import Section
from pipeline_config.schema.clean import CleanConfig
from pipeline_config.schema.datasets import DatasetSource, check_unique_names
from pipeline_config.schema.evaluate import EvaluateConfig
from pipeline_config.schema.model import ARCHITECTURE_LINEAR_MODULES, ModelConfig, ScratchSource
from pipeline_config.schema.register import RegisterConfig
from pipeline_config.schema.runtime import ExecutorConfig, SandboxConfig
from pipeline_config.schema.scrape import ScrapeConfig
from pipeline_config.schema.synthesize import SynthesizeConfig
from pipeline_config.schema.tokenize import SplitConfig, TokenizeConfig
from pipeline_config.schema.train import TrainConfig

# `register` is the stage's name; it shadows only ABCMeta.register, a classmethod nobody calls on configs.
# pydantic warns once, when the class is made: silenced there only, so importing the schema changes no
# process-wide warning filter.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class PipelineConfig(Section):
        name: str
        workspace: str | None = None  # default: $FINETUNE_WORKSPACE, else <repo>/workspace (tasks.common.io)
        seed: int = 0
        model: ModelConfig
        scrape: ScrapeConfig = ScrapeConfig()
        synthesize: SynthesizeConfig = SynthesizeConfig()
        datasets: list[DatasetSource] = []  # the user's own instruction and chat data
        clean: CleanConfig = CleanConfig()
        split: SplitConfig = SplitConfig()
        tokenize: TokenizeConfig = TokenizeConfig()
        train: TrainConfig = TrainConfig()
        evaluate: EvaluateConfig = EvaluateConfig()
        register: RegisterConfig = RegisterConfig()
        executor: ExecutorConfig = ExecutorConfig()  # how, not what: in no stage key
        sandbox: SandboxConfig = SandboxConfig()  # how, not what: in no stage key

        _unique_datasets = field_validator("datasets")(check_unique_names)

        @model_validator(mode="after")
        def _cross_section(self) -> PipelineConfig:
            _check_windows(self.model, self.tokenize)
            _check_target_modules(self.model.architecture, self.train)
            _check_gate(self.evaluate, self.register)
            # (a hub tokenizer's FIM tokens can only be checked once it is loaded: the tokenize stage does)
            return self


def _check_windows(model: ModelConfig, tokenize: TokenizeConfig) -> None:
    """A model built here (a scratch source, a miniature) has the window its config says: tokenize.max_length
    must fit it. (A pretrained model's window is known once it is loaded.)"""
    source = model.source
    if isinstance(source, ScratchSource) and tokenize.max_length > source.max_position_embeddings:
        raise ValueError(
            f"tokenize.max_length ({tokenize.max_length}) exceeds "
            f"model.source.max_position_embeddings ({source.max_position_embeddings})"
        )
    mini = model.miniature
    if mini is not None and tokenize.max_length > mini.max_position_embeddings:
        raise ValueError(
            f"tokenize.max_length ({tokenize.max_length}) exceeds "
            f"model.miniature.max_position_embeddings ({mini.max_position_embeddings})"
        )


def evaluated_metrics(evaluate: EvaluateConfig) -> dict[str, dict[str, str]]:
    """The suites and metrics this evaluation config computes (pipeline_config/metrics.py)."""
    suites = {"heldout": SUITES["heldout"]}
    if evaluate.completion.next_line:
        suites["completion"] = SUITES["completion"]
    if evaluate.completion.fim:
        suites["fim"] = SUITES["fim"]
    for name in PASS_K_SUITES:
        spec = getattr(evaluate, name)
        if spec.enabled:
            suites[name] = pass_k_metrics(spec.k)
    return suites


def _check_gate(evaluate: EvaluateConfig, register: RegisterConfig) -> None:
    """The gate's metrics are ones this evaluation computes, and its baselines are scored on the primary."""
    suites = evaluated_metrics(evaluate)
    try:
        primary = parse_metric(register.primary_metric, suites)
    except ValueError as error:
        raise ValueError(f"register.primary_metric: {error}") from None
    for i, guard in enumerate(register.guards):
        try:
            parse_metric(guard.metric, suites)
        except ValueError as error:
            raise ValueError(f"register.guards[{i}].metric: {error}") from None
    for baseline in register.must_beat:
        if not scores_baseline(baseline, primary):
            raise ValueError(
                f"register.must_beat: {baseline} is not scored on {primary} (register.primary_metric); "
                f"it is scored on the suites {', '.join(BASELINES[baseline])}"
            )


def _check_target_modules(architecture: str | None, train: TrainConfig) -> None:
    """Names the architecture lacks fail when the profile loads, before any model is downloaded (the train
    stage checks the loaded model too: peft alone would train on the names that match and ignore the rest)."""
    if architecture is None or train.lora is None or not isinstance(train.lora.target_modules, list):
        return
    available = ARCHITECTURE_LINEAR_MODULES[architecture]
    missing = [m for m in train.lora.target_modules if m.rsplit(".", 1)[-1] not in available]
    if missing:
        raise ValueError(
            f"train.lora.target_modules names {missing}, which a {architecture} model (model.architecture) "
            f"does not have; its linear modules: {', '.join(available)}"
        )
