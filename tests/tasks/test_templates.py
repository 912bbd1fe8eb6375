"""The seed recipes' other prompt layouts, golden strings: `### Question / ### Answer` (the pythia-70m Q&A
tutorial) and a tokenizer's own chat template (the phi-3-mini QLoRA recipe), plus the BOS written into a
template for tokenizers adding one."""

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
    from tests.conftest import REPO

    for name in TEMPLATE_NAMES:
        assert TokenizeConfig(template=name).template == name
        if name != CHAT:
            assert get_template(name) is TEMPLATES[name]
    with pytest.raises(ValueError, match="'alpaca', 'codegen_task', 'question_answer' or 'chat'"):
        TokenizeConfig(template="alpacca")
    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("**Tokenize and train.** Templates:", 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in paragraph for name in TEMPLATE_NAMES)
