"""Batched generation with a decoder-only model: left padding, prompt budget, greedy or sampled.

The local teacher (sampled) and the evaluation (greedy) both generate through `generate`, so both see
prompts encoded exactly as the tokenize stage encoded them for training (no added special tokens).
"""

from __future__ import annotations


def prompt_budget(model, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside the generation; None when the model states no position limit."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if not max_positions:
        return None
    budget = int(max_positions) - max_new_tokens
    if budget <= 0:
        raise ValueError(
            f"max_new_tokens ({max_new_tokens}) leaves no room for a prompt in a model with "
            f"max_position_embeddings={max_positions}"
        )
    return budget


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    temperature: float = 0.0,
) -> list[str]:
    """One completion per prompt, in order: the new text only. `tokenizer` must pad on the left."""
    import torch

    if tokenizer.padding_side != "left":
        raise ValueError("generate needs a left-padding tokenizer (load_tokenizer(..., for_generation=True))")
    budget = prompt_budget(model, max_new_tokens)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    completions: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            truncation=budget is not None,
            max_length=budget,
            add_special_tokens=False,
        ).to(model.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
        # left padding puts every prompt's end at the same column, so one slice drops all the prompts
        completions += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return completions
