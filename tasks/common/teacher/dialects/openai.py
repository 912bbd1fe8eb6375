"""OpenAI-compatible `/chat/completions` (vLLM, Ollama, TGI, llama.cpp server, the OpenAI API)."""

from __future__ import annotations

from typing import Any

from tasks.common.teacher.dialects import BadResponse, Request, tokens


class OpenAIChat:
    path = "/chat/completions"
    key_env = "OPENAI_API_KEY"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def body(self, request: Request) -> dict[str, Any]:
        return {
            "model": request.model,
            "messages": [{"role": "user", "content": request.prompt}],
            "temperature": request.temperature,
            "max_tokens": request.max_new_tokens,
        }

    def completion(self, data: Any) -> tuple[str, int, int]:
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise BadResponse(f"no choices[0].message.content ({exc!r})") from None
        if content is not None and not isinstance(content, str):
            raise BadResponse(f"content is {type(content).__name__}, not text")
        # some servers send null content for an empty completion
        return (content or "", *tokens(data.get("usage"), "prompt_tokens", "completion_tokens"))

    def error_message(self, data: Any) -> str | None:
        error = data.get("error") if isinstance(data, dict) else None  # {"error": {"message": ...}}
        if isinstance(error, dict):
            return error.get("message") or None
        return error if isinstance(error, str) and error else None


DIALECT = OpenAIChat()
