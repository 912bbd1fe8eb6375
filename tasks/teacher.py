"""The teacher that Self-Instruct asks for new instructions and responses.

Two backends share one tiny interface, `Teacher.generate(prompts) -> completions`:

* `OpenAITeacher` talks to any OpenAI-compatible `/chat/completions` endpoint (vLLM, llama.cpp server,
  TGI, the OpenAI API itself) with plain `requests`, retrying the failures that are worth retrying.
* `LocalTeacher` runs a transformers causal LM from a local folder (by default the pipeline's own base
  model), so the offline profile needs no server at all.

`make_teacher` picks one from the `synthesize.teacher` config section.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import requests

from pipeline_config.schema import TeacherConfig

if TYPE_CHECKING:  # torch/transformers are heavy; import them only when a local teacher is built
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
MAX_DELAY_S = 30.0  # neither our backoff nor a server's Retry-After may stall a stage longer than this
MAX_ERROR_CHARS = 500  # server error bodies can be whole HTML pages; keep messages readable
LOCAL_BATCH_SIZE = 8


class TeacherError(RuntimeError):
    """The teacher could not produce a completion (server refused, gave up retrying, or answered garbage)."""


@runtime_checkable
class Teacher(Protocol):
    def generate(self, prompts: list[str]) -> list[str]:
        """Return one completion per prompt, in order: the generated text only, without the prompt."""
        ...


# --------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP backend
# --------------------------------------------------------------------------------------------------------

# Connection drops (including mid-body) and timeouts are transient; anything else from requests is a bug.
_TRANSIENT_EXCEPTIONS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _backoff_delay(attempt: int) -> float:
    return min(BACKOFF_BASE_S * 2**attempt, MAX_DELAY_S)


def _retry_after(resp: requests.Response) -> float | None:
    """The numeric Retry-After in seconds, capped; None if absent or an HTTP date (not worth parsing)."""
    raw = resp.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_DELAY_S)


def _error_text(resp: requests.Response) -> str:
    """The server's own explanation: OpenAI's {"error": {"message": ...}} when present, else the raw body."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:MAX_ERROR_CHARS]
        if isinstance(err, str) and err:
            return err[:MAX_ERROR_CHARS]
    return (resp.text or resp.reason or "").strip()[:MAX_ERROR_CHARS]


def _completion_text(resp: requests.Response, url: str) -> str:
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        body = resp.text[:MAX_ERROR_CHARS]
        raise TeacherError(f"{url}: unexpected response shape ({exc!r}): {body}") from None
    return content or ""  # some servers send null content for an empty completion


class OpenAITeacher:
    """Chat completions from an OpenAI-compatible server, one request per prompt, retried with backoff."""

    def __init__(
        self,
        cfg: TeacherConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not cfg.base_url:
            raise ValueError("OpenAITeacher needs teacher.base_url")
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self._sleep = sleep
        self._session = requests.Session()  # keep-alive: one TCP connection for the whole stage
        key = os.environ.get(cfg.api_key_env)
        if key:
            # held only in the session's headers; never logged, never part of an error message
            self._session.headers["Authorization"] = f"Bearer {key}"

    def __repr__(self) -> str:  # the default repr is harmless, but make sure no future field leaks the key
        return f"OpenAITeacher(url={self.url!r}, model={self.cfg.model!r})"

    def generate(self, prompts: list[str]) -> list[str]:
        return [self._complete(prompt) for prompt in prompts]

    def close(self) -> None:
        self._session.close()

    def _body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_new_tokens,
        }

    def _complete(self, prompt: str) -> str:
        body = self._body(prompt)
        attempts = self.cfg.max_retries + 1
        last_error = "no attempt made"
        for attempt in range(attempts):
            try:
                resp = self._session.post(self.url, json=body, timeout=self.cfg.timeout_s)
            except _TRANSIENT_EXCEPTIONS as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                delay = _backoff_delay(attempt)
            else:
                if resp.ok:
                    return _completion_text(resp, self.url)
                detail = f"HTTP {resp.status_code}: {_error_text(resp)}"
                if not _is_retryable_status(resp.status_code):
                    # a bad request stays bad: retrying would only hide the configuration error
                    raise TeacherError(f"{self.url} rejected the request with {detail}")
                last_error = detail
                server_delay = _retry_after(resp)
                delay = _backoff_delay(attempt) if server_delay is None else server_delay
            if attempt + 1 < attempts:
                log.warning(
                    "teacher request failed (%s); retry %d/%d in %.1fs",
                    last_error,
                    attempt + 1,
                    attempts - 1,
                    delay,
                )
                self._sleep(delay)
        raise TeacherError(f"{self.url}: gave up after {attempts} attempt(s); last error: {last_error}")


# --------------------------------------------------------------------------------------------------------
# Local transformers backend
# --------------------------------------------------------------------------------------------------------


def _prompt_budget(model: PreTrainedModel, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside the generation; None when the model states no position limit."""
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if not max_positions:
        return None
    budget = int(max_positions) - max_new_tokens
    if budget <= 0:
        raise ValueError(
            f"teacher.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in a model with "
            f"max_position_embeddings={max_positions}"
        )
    return budget


def _load_tokenizer(model_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
    # decoder-only models continue from the last token, so padding must sit on the left for batching,
    # and over-long prompts lose their oldest text (the few-shot examples), not the task at the end
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class LocalTeacher:
    """Batched generation with a local transformers causal LM; reproducible for a given seed."""

    batch_size = LOCAL_BATCH_SIZE

    def __init__(self, model_path: str, cfg: TeacherConfig, seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.cfg = cfg
        self.seed = seed
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = _load_tokenizer(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=False)
        self.model = model.to(self.device).eval()
        self.max_prompt_tokens = _prompt_budget(self.model, cfg.max_new_tokens)
        self._calls = 0

    def generate(self, prompts: list[str]) -> list[str]:
        import torch

        # Seed per call (seed + call index): two teachers with one seed replay the same sequence of
        # outputs, yet a repeated call does not return the very same samples again.
        torch.manual_seed(self.seed + self._calls)
        self._calls += 1
        completions: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            completions.extend(self._generate_batch(prompts[start : start + self.batch_size]))
        return completions

    def _sampling_kwargs(self) -> dict[str, Any]:
        if self.cfg.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.cfg.temperature}

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        truncate = self.max_prompt_tokens is not None
        enc = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=truncate,
            max_length=self.max_prompt_tokens if truncate else None,
        )
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _generate_batch(self, prompts: list[str]) -> list[str]:
        import torch

        enc = self._encode(prompts)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.cfg.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                **self._sampling_kwargs(),
            )
        # left padding puts every prompt's end at the same column, so one slice drops all the prompts
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


# --------------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------------


def make_teacher(cfg: TeacherConfig, base_model_path: str | None, seed: int) -> Teacher:
    """The teacher the config asks for; teacher.model "base" means the pipeline's own base model."""
    if cfg.backend == "openai":
        return OpenAITeacher(cfg)
    if cfg.model == "base":
        if base_model_path is None:
            raise ValueError("teacher.model is 'base' but no base model path was given")
        return LocalTeacher(base_model_path, cfg, seed)
    return LocalTeacher(cfg.model, cfg, seed)
