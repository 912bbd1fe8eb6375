"""The default base model (SmolLM2-135M-Instruct, from its GGUF file) loaded, generating and solving
HumanEval: what the base_model stage stores, and the evaluation's generation on the CPU.

Run alone: `python -m benchmarks.run base_model_load eval_generation humaneval_base`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.registry import benchmark
from benchmarks.timing import time_runs, timed

PROFILE = "pipeline_config/offline.yaml"  # its model.source is the default base model


@contextmanager
def stored_base_model() -> Iterator[Path]:
    """The save_pretrained folder the base_model stage stores for the default model, in a temporary
    folder (dequantized from the GGUF file, as the stage does)."""
    from pipeline_config import load_config
    from tasks.base_model.sources import dequantize_gguf

    with tempfile.TemporaryDirectory() as tmp:
        dequantize_gguf(load_config(PROFILE).model.source, Path(tmp))
        yield Path(tmp)


@benchmark("base_model_load")
def base_model_load(repeats: int = 3) -> dict:
    """Loading the default base model (SmolLM2-135M-Instruct) from its GGUF file, which dequantizes every
    tensor, against loading the save_pretrained folder the base_model stage stores once: what every later
    stage (teacher, train, evaluate, register) saves by reading the folder. value: folder load seconds;
    ratio = GGUF load / folder load, medians of 3."""
    from transformers import AutoModelForCausalLM

    from pipeline_config import load_config
    from tasks.base_model.sources import gguf_path

    path = gguf_path(load_config(PROFILE).model.source)
    with stored_base_model() as folder:  # storing it dequantizes once: the warm-up
        runs = time_runs(
            {
                "gguf": lambda: AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name),
                "folder": lambda: AutoModelForCausalLM.from_pretrained(folder),
            },
            repeats=repeats,
            warmup=0,
        )
    folder_s = runs["folder"].median
    return {
        "value": round(folder_s, 3),
        "unit": "s",
        "ratio": round(runs["gguf"].median / folder_s, 1),
        "detail": {
            **{f"{name}_s": round(r.median, 3) for name, r in runs.items()},
            "repeats": repeats,
            "ratio_means": "GGUF dequantizing load / stored folder load (higher is better)",
        },
    }


@benchmark("eval_generation")
def eval_generation(prompts: int = 16, max_new_tokens: int = 96, batch: int = 8, repeats: int = 3) -> dict:
    """Generated tokens per second of the evaluation's batched, left-padded greedy generation (batch 8,
    length-sorted) against one prompt at a time, same function, model (SmolLM2-135M-Instruct) and 16
    HumanEval prompts, up to 96 new tokens each, medians of 3 after a warm-up (goal: at least 3x on the
    CPU). value: batched tokens/s; ratio = batched / one at a time."""
    import torch

    from tasks.common.benchmarks import humaneval_problems
    from tasks.common.generation import generate
    from tasks.common.models import load_for_inference, load_tokenizer

    texts = [p["prompt"] for p in humaneval_problems(prompts, seed=0)]
    with stored_base_model() as folder, torch.inference_mode():
        model, tokenizer = load_for_inference(folder), load_tokenizer(folder, for_generation=True)

        def new_tokens(size: int, some: list[str] = texts) -> int:
            return sum(c.new_tokens for c in generate(model, tokenizer, some, max_new_tokens, size))

        (
            new_tokens(batch, texts[:batch]),
            new_tokens(1, texts[:1]),
        )  # warm-up on a few: all of them takes minutes
        runs = time_runs(
            {"batched": lambda: new_tokens(batch), "one_at_a_time": lambda: new_tokens(1)},
            repeats=repeats,
            warmup=0,
        )
    # greedy: every repeat generates the same tokens, so tokens / median seconds is the median rate
    batched, single = (runs[n].result / runs[n].median for n in ("batched", "one_at_a_time"))
    speedup = batched / single
    return {
        "value": round(batched, 1),
        "unit": "tokens/s",
        "ratio": round(speedup, 2),
        "detail": {
            "one_at_a_time_tokens_per_s": round(single, 1),
            "prompts": prompts,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch,
            "torch_threads": torch.get_num_threads(),
            "repeats": repeats,
            "ratio_means": "batched / one prompt at a time, tokens per second (higher is better; goal >= 3)",
        },
    }


@benchmark("humaneval_base")
def humaneval_base(max_new_tokens: int = 256) -> dict:
    """Not a speed figure: greedy pass@1 of the base SmolLM2-135M-Instruct on all 164 HumanEval problems,
    through the evaluation's own generation and sandbox (the README quotes it), prompted as its kind expects
    (tasks/evaluation/prompting.py `base_style`: a chat turn, since its tokenizer has a chat template; the
    answer's first code block is the code). detail records the prompt style and the statuses (~15
    minutes)."""
    from pipeline_config.schema import PassAtKConfig
    from tasks.common.benchmarks import benchmark_key, humaneval_problems, program
    from tasks.common.models import load_for_inference, load_tokenizer
    from tasks.evaluation.passk import Benchmark, run_passk
    from tasks.evaluation.prompting import base_style

    problems = humaneval_problems()
    spec = PassAtKConfig(enabled=True, max_new_tokens=max_new_tokens)
    bench = Benchmark("humaneval", problems, program, spec, benchmark_key(problems))
    with stored_base_model() as folder:
        model, tokenizer = load_for_inference(folder), load_tokenizer(folder, for_generation=True)
        style = base_style(tokenizer)
        run = timed(lambda: run_passk(model, tokenizer, bench, batch_size=8, style=style))
    scores, rows = run.result
    statuses = [r["statuses"][0] for r in rows]
    return {
        "value": round(scores["pass_at_1"], 4),
        "unit": "pass@1",
        "detail": {
            "model": "SmolLM2-135M-Instruct (base, GGUF Q4_1 dequantized)",
            "prompt_style": style.name,
            "problems": len(problems),
            "passed": statuses.count("passed"),
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
            "greedy_max_new_tokens": max_new_tokens,
            "seconds": round(run.seconds, 1),
        },
    }
