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


def greedy_agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    """How closely `other`'s greedy token sequences follow `reference`'s, prompt by prompt: the share
    identical, and the mean share of the reference's tokens reproduced before the first difference."""
    prefix = []
    for ref, got in zip(reference, other, strict=True):
        differs = (i for i, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b)
        same = next(differs, min(len(ref), len(got)))
        prefix.append(1.0 if ref == got else same / max(len(ref), 1))
    return {
        "identical": round(sum(r == g for r, g in zip(reference, other, strict=True)) / len(reference), 3),
        "mean_prefix_agreement": round(sum(prefix) / len(prefix), 3),
        "prompts": len(reference),
    }


@benchmark("eval_generation")
def eval_generation(
    prompts: int = 16,
    max_new_tokens: int = 96,
    batch: int = 8,
    repeats: int = 3,
    agreement_prompts: int = 32,
    single_prompts: int = 8,
) -> dict:
    """Generated tokens per second of the evaluation's batched, left-padded greedy generation (batch 8,
    length-sorted), SmolLM2-135M-Instruct on 16 HumanEval prompts, up to 96 new tokens each, medians of 3
    after a warm-up, contenders in turn: in fp32, with bf16 weights (what evaluate.precision auto takes on
    a CPU with native bf16), with fp32 weights under bf16 autocast, and one prompt at a time (8 of them) in
    the default precision. Then greedy agreement of bf16 with fp32 on 32 HumanEval prompts (the share of
    identical outputs, and of fp32's tokens reproduced before the first difference). value: batched
    tokens/s in the default precision; ratio = batched / one at a time (goal >= 3); detail.bf16_over_fp32
    (goal >= 2)."""
    import torch

    from tasks.common.benchmarks import humaneval_problems
    from tasks.common.generation import generate
    from tasks.common.models import cast, load_for_inference, load_tokenizer, model_precision

    texts = [p["prompt"] for p in humaneval_problems(max(prompts, agreement_prompts), seed=0)]
    with stored_base_model() as folder, torch.inference_mode():
        tokenizer = load_tokenizer(folder, for_generation=True)
        fp32 = load_for_inference(folder, precision="fp32")
        default = load_for_inference(folder)
        bf16 = cast(load_for_inference(folder, precision="fp32"), "bf16")

        def run(model, size: int, some: list[str], autocast: bool = False) -> list:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return generate(model, tokenizer, some, max_new_tokens, size)

        contenders = {
            "fp32": lambda: run(fp32, batch, texts[:prompts]),
            "bf16": lambda: run(bf16, batch, texts[:prompts]),
            "autocast": lambda: run(fp32, batch, texts[:prompts], autocast=True),
            "one_at_a_time": lambda: run(default, 1, texts[:single_prompts]),
        }
        # warm-up on a few prompts: all of them takes minutes
        for model, size in ((fp32, batch), (bf16, batch), (default, 1)):
            run(model, size, texts[:size])
        runs = time_runs(contenders, repeats=repeats, warmup=0)
        ids = {
            name: [tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in run(m, batch, texts)]
            for name, m in (("fp32", fp32), ("bf16", bf16))
        }
        default_precision = model_precision(default)
    # greedy: every repeat generates the same tokens, so tokens / median seconds is the median rate
    rate = {n: sum(c.new_tokens for c in runs[n].result) / runs[n].median for n in runs}
    batched = rate[default_precision]
    return {
        "value": round(batched, 1),
        "unit": "tokens/s",
        "ratio": round(batched / rate["one_at_a_time"], 2),
        "detail": {
            "tokens_per_s": {n: round(r, 1) for n, r in rate.items()},
            "bf16_over_fp32": round(rate["bf16"] / rate["fp32"], 2),
            "autocast_over_fp32": round(rate["autocast"] / rate["fp32"], 2),
            "greedy_agreement_bf16_vs_fp32": greedy_agreement(ids["fp32"], ids["bf16"]),
            "default_precision": default_precision,
            "prompts": prompts,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch,
            "torch_threads": torch.get_num_threads(),
            "repeats": repeats,
            "ratio_means": "batched / one prompt at a time in the default precision, tokens per second "
            "(higher is better; goal >= 3); bf16_over_fp32 goal >= 2",
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
