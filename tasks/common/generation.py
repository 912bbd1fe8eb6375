"""Batched generation with a decoder-only model: left padding, prompt budget, stop sequences (and an
optional per-row stopping rule on the new text), greedy or sampled.

The local teacher (sampled), the evaluation (greedy), pass@k and `finetune generate` all generate through
`generate`, so all of them see prompts encoded exactly as the tokenize stage encoded them for training (no
added special tokens), and all cut a completion at the same stop sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tasks.common.progress import Progress


@dataclass(frozen=True)
class Completion:
    text: str  # the new text, cut before the first stop sequence
    new_tokens: int  # tokens generated up to the end of sequence, a stop sequence or the cap
    hit_cap: bool  # still going at max_new_tokens: the text may be cut short

    @property
    def empty(self) -> bool:
        return not self.text.strip()


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


def cut_at_stop(text: str, stop: Sequence[str], prompt: str = "") -> tuple[str, bool]:
    """(text before the first stop sequence, whether one was found). A stop sequence may begin at the
    end of the prompt (transformers matches it across the boundary): then nothing of the text is kept."""
    if any(
        s[:k] and prompt.endswith(s[:k]) and text.startswith(s[k:]) for s in stop for k in range(1, len(s))
    ):
        return "", True
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    stop_when: Callable[[str], bool] | None = None,
) -> list[Completion]:
    """One completion per prompt, in order. `tokenizer` must pad on the left.

    A sequence that meets a stop sequence stops there (transformers' `stop_strings`), so a batch ends as
    soon as each of its rows has finished rather than at the cap. `stop_when(new_text)`, when given, is
    checked on each row's new text after every token and ends that row alone once it is true (a rule no
    fixed string expresses: "a newline after some code"); its text is kept whole, cut only at `stop`.
    Batches are formed from prompts of similar length (results come back in the caller's order): padding
    is compute spent on nothing.
    """
    import torch

    if tokenizer.padding_side != "left":
        raise ValueError("generate needs a left-padding tokenizer (load_tokenizer(..., for_generation=True))")
    budget = prompt_budget(model, max_new_tokens)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    if stop:
        sampling |= {"stop_strings": list(stop), "tokenizer": tokenizer}
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    completions: dict[int, Completion] = {}
    progress = Progress(len(prompts), "generate", key="generation-progress", unit="prompt")
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = [prompts[i] for i in indices]
        enc = tokenizer(
            batch,
            return_tensors="pt",
            padding=True,
            truncation=budget is not None,
            max_length=budget,
            add_special_tokens=False,
        ).to(model.device)
        criteria = _rule(tokenizer, enc["input_ids"].shape[1], stop_when) if stop_when else None
        with torch.inference_mode():
            out = model.generate(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                stopping_criteria=criteria,
                **sampling,
            )
        # left padding puts every prompt's end at the same column, so one slice drops all the prompts
        for i, row in zip(indices, out[:, enc["input_ids"].shape[1] :].tolist(), strict=True):
            n = next((j for j, token in enumerate(row) if token in ends), len(row))
            text, stopped = cut_at_stop(tokenizer.decode(row[:n], skip_special_tokens=True), stop, prompts[i])
            stopped = stopped or bool(stop_when and stop_when(text))
            completions[i] = Completion(text, n, n >= max_new_tokens and not stopped)
        progress.update(len(indices))
    progress.close()
    return [completions[i] for i in range(len(prompts))]


def _rule(tokenizer, prompt_length: int, stop_when: Callable[[str], bool]):
    """`stop_when` as transformers stopping criteria: one bool per row, so each row ends on its own (a
    finished row is padded while the others go on)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class TextRule(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
            return torch.tensor([stop_when(t) for t in texts], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([TextRule()])
