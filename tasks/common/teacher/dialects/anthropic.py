"""Anthropic's Messages API (`/v1/messages`): base_url `https://api.anthropic.com/v1`, key in x-api-key."""

from __future__ import annotations

from typing import Any

from tasks.common.teacher.dialects import BadResponse, Request, tokens

API_VERSION = "2023-06-01"  # the Messages API's version header


class AnthropicMessages:
    path = "/messages"
    key_env = "ANTHROPIC_API_KEY"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"anthropic-version": API_VERSION} | ({"x-api-key": api_key} if api_key else {})

    def body(self, request: Request) -> dict[str, Any]:
        return {
            "model": request.model,
            "max_tokens": request.max_new_tokens,  # required by this API
            "messages": [{"role": "user", "content": request.prompt}],
            "temperature": min(request.temperature, 1.0),  # its range is [0, 1]
        }

    def completion(self, data: Any) -> tuple[str, int, int]:
        try:
            blocks = data["content"]
            text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        except (KeyError, TypeError, AttributeError) as exc:
            raise BadResponse(f"no content[].text ({exc!r})") from None
        return (text, *tokens(data.get("usage"), "input_tokens", "output_tokens"))

    def error_message(self, data: Any) -> str | None:
        error = data.get("error") if isinstance(data, dict) else None  # {"type": "error", "error": {...}}
        return (error.get("message") or None) if isinstance(error, dict) else None


DIALECT = AnthropicMessages()
