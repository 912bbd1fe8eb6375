"""The prompt templates (tasks/common/templates.py), golden strings: alpaca and codegen_task (with and
without an input), `### Question / ### Answer` (the pythia-70m Q&A tutorial) and a tokenizer's own chat
template (the phi-3-mini QLoRA recipe), plus the BOS written into a template for tokenizers adding one and
an unknown name that names the config key."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.common.templates import PromptTemplate, chat_template, format_prompt, resolve_template

# SmolLM2-Instruct's ChatML template, shortened; the system line holds braces, which str.format must keep
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n"
    "Answer in {JSON} when asked.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


CODEGEN_HEAD = (
    "### Instruction:\nUse the Task below and the Input given to write the Response, which is a "
    "programming code that can solve the following Task:\n\n### Task:\nReverse a list.\n\n"
)


@pytest.mark.parametrize(
    ("template", "instruction", "input_text", "expected"),
    [
        (
            "alpaca",
            "  Reverse a list.\n",
            "  xs = [1, 2]  ",
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nReverse a list.\n\n### Input:\nxs = [1, 2]\n\n### Response:\n",
        ),
        (
            "codegen_task",
            "Reverse a list.",
            "xs = [1, 2]",
            CODEGEN_HEAD + "### Input:\nxs = [1, 2]\n\n### Response:\n",
        ),
        # the codegen layout always has an Input block, empty when there is no input
        ("codegen_task", "Reverse a list.", "", CODEGEN_HEAD + "### Input:\n\n\n### Response:\n"),
    ],
    ids=["alpaca", "codegen_task", "codegen_task_without_input"],
)
def test_prompt_exact(template: str, instruction: str, input_text: str, expected: str) -> None:
    assert format_prompt(template, instruction, input_text) == expected


@pytest.mark.parametrize("input_text", ["", "   \n"])
def test_alpaca_prompt_without_input_has_no_input_block(input_text: str) -> None:
    got = format_prompt("alpaca", "Reverse a list.", input_text)
    assert got == (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nReverse a list.\n\n"
        "### Response:\n"
    )
    assert "### Input:" not in got


def test_unknown_template_raises() -> None:
    with pytest.raises(ValueError, match="unknown tokenize.template 'chatml'"):
        format_prompt("chatml", "x")


def test_question_answer_prompt_exact() -> None:
    assert format_prompt("question_answer", "Reverse a list.") == (
        "### Question:\nReverse a list.\n\n### Answer:\n"
    )
    assert format_prompt("question_answer", "Reverse a list.", "xs = [1, 2]") == (
        "### Question:\nReverse a list.\n\nxs = [1, 2]\n\n### Answer:\n"
    )


def test_chat_template_is_the_tokenizer_s_own(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHATML
    template = chat_template(tokenizer)
    assert template.format("Reverse a list.") == (
        "<|im_start|>system\nAnswer in {JSON} when asked.<|im_end|>\n"
        "<|im_start|>user\nReverse a list.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.format("Reverse a list.", "xs = [1, 2]") == tokenizer.apply_chat_template(
        [{"role": "user", "content": "Reverse a list.\n\nxs = [1, 2]"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert template.stop == ("<|im_end|>",)  # what ends the assistant's turn
    # it travels with the model as plain format strings: no tokenizer needed to use it again
    assert PromptTemplate.from_dict(template.to_dict()).format("x") == template.format("x")


def test_chat_without_a_chat_template_names_the_config_key(tiny_model_dir) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="tokenize.template 'chat': the tokenizer .* has no chat template"):
        resolve_template("chat", tokenizer)


@dataclass
class BosTokenizer:
    """Adds BOS the way it reports (a post-processor), whatever its `add_bos_token` attribute says."""

    bos_token: str = "<s>"
    adds: bool = True
    bos_token_id: int = 1
    add_bos_token: bool = False

    def __call__(self, text: str) -> dict:
        return {"input_ids": ([self.bos_token_id] if self.adds else []) + [7]}


def test_bos_is_written_into_the_template_when_the_tokenizer_adds_one() -> None:
    template = resolve_template("question_answer", BosTokenizer())
    assert template.format("Sort.") == "<s>### Question:\nSort.\n\n### Answer:\n"
    assert resolve_template("question_answer", BosTokenizer(adds=False)).format("Sort.").startswith("###")
    # a template that already starts with it (a chat template that writes BOS itself) gets no second one
    once = resolve_template("question_answer", BosTokenizer(bos_token="###"))
    assert once.format("Sort.").startswith("### Question:")


def test_the_schema_accepts_exactly_the_registered_templates_and_the_readme_names_them() -> None:
    # one registry (tasks/common/templates.py): a template added there is valid config, and nowhere else
    from pipeline_config.schema import TokenizeConfig
    from tasks.common.templates import CHAT, TEMPLATE_NAMES, TEMPLATES, get_template
    from tests.conftest import docs_text

    for name in TEMPLATE_NAMES:
        assert TokenizeConfig(template=name).template == name
        if name != CHAT:
            assert get_template(name) is TEMPLATES[name]
    with pytest.raises(ValueError, match="'alpaca', 'codegen_task', 'question_answer' or 'chat'"):
        TokenizeConfig(template="alpacca")
    readme = docs_text()
    paragraph = readme.split("**Tokenize and train.** Templates:", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in paragraph for name in TEMPLATE_NAMES)
