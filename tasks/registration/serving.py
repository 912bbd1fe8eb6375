"""A registered model loaded back with what it was registered with: the prompt template it was trained
with and the generation settings it was evaluated with (both in the version's MLmodel metadata). The
champion re-scoring of the gate and `finetune generate` load models through here, so both generate as the
evaluation did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.common.generation import Completion, generate
from tasks.common.templates import PromptTemplate

ALIASES = ("champion", "challenger")


def model_uri(model: str, model_name: str) -> str:
    """ "champion" / "challenger" (aliases), a version number, or a full models:/ URI."""
    if model.startswith("models:/"):
        return model
    if model in ALIASES:
        return f"models:/{model_name}@{model}"
    if model.isdigit():
        return f"models:/{model_name}/{model}"
    raise ValueError(f"--model {model!r}: expected champion, challenger, a version number or models:/...")


@dataclass
class RegisteredModel:
    uri: str
    model: Any
    tokenizer: Any
    template: PromptTemplate
    generation: dict  # max_new_tokens, stop, temperature, precision: as the evaluation generated

    def complete(
        self, prompts: list[str], max_new_tokens: int | None = None, batch_size: int = 8
    ) -> list[Completion]:
        """Generate for prompts already formatted with `template` (see `format`)."""
        budget = max_new_tokens or self.generation["max_new_tokens"]
        return generate(self.model, self.tokenizer, prompts, budget, batch_size, stop=self.template.stop)

    def format(self, instruction: str, input_text: str = "") -> str:
        return self.template.format(instruction, input_text)

    def format_conversation(self, messages: list[dict]) -> str:
        """A conversation ending with the user turn to answer, rendered as training rendered its turns
        (tasks/common/chat.py: the held-out conversations were evaluated from the same prompt)."""
        from tasks.common.chat import generation_form

        return generation_form(messages, self.template, self.tokenizer, row_id="--messages")[0]


def load_registered(uri: str, precision: str | None = None) -> RegisteredModel:
    """The registered model, its weights in `precision` resolved for this device (None: the precision the
    evaluation generated in, recorded with it; fp32 where this device lacks native bf16)."""
    import mlflow

    from tasks.common.models import cast, pick_device, resolve_precision

    metadata = mlflow.models.get_model_info(uri).metadata or {}
    if "template" not in metadata or "generation" not in metadata:
        raise ValueError(f"{uri} was not registered by this pipeline: its MLmodel has no template metadata")
    components = mlflow.transformers.load_model(uri, return_type="components")
    tokenizer = components["tokenizer"]
    tokenizer.padding_side = tokenizer.truncation_side = "left"  # as load_tokenizer(for_generation=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = PromptTemplate.from_dict(metadata["template"])
    generation = metadata["generation"]
    wanted = resolve_precision(precision or generation.get("precision", "fp32"), pick_device())
    model = cast(components["model"].eval(), wanted)
    return RegisteredModel(uri, model, tokenizer, template, generation)
