"""Independent computations the model tests compare against: the NLL of one unpadded row and the greedy
continuation of one unpadded prompt, each one sequence at a time, so that batching, padding and truncation
in the code under test must not change the answer."""

from __future__ import annotations

import torch


def independent_nll(model, row: dict) -> tuple[float, int]:
    """One unpadded row: -log p(token | prefix) summed over its label tokens, and their count."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([row["input_ids"]])).logits[0].double(), dim=-1)
    nll, count = 0.0, 0
    for t in range(1, len(row["input_ids"])):
        if row["labels"][t] != -100:
            nll -= float(logp[t - 1, row["labels"][t]])
            count += 1
    return nll, count


def greedy(model, tokenizer, prompt: str | list[int], max_new_tokens: int) -> str:
    """Greedy continuation of one prompt (text, or token ids), unbatched and unpadded."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if isinstance(prompt, str) else prompt
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()
