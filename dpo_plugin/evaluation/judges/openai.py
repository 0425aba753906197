"""The ``openai`` judge: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama …)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any

from ...errors import ConfigError
from .base import Judge, JudgeFailure, prompt_text
from .llm import TEMPLATE

logger = logging.getLogger(__name__)

SYSTEM = "You compare two responses to the same question. Reply with exactly one of: A, B, tie."
RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


def parse_reply(text: str) -> float | None:
    """``A`` → 0, ``B`` → 1, ``tie`` → 0.5 (first word, case-insensitive); anything else None."""
    match = re.match(r"\W*(A|B|TIE)\b", text.strip(), flags=re.IGNORECASE)
    if not match:
        return None
    return {"A": 0.0, "B": 1.0, "TIE": 0.5}[match.group(1).upper()]


class OpenAIJudge(Judge):
    """POSTs ``{base_url}/chat/completions`` (temperature 0) per pair, with retries, a timeout and a request cap.

    The API key is read from the environment variable named by ``api_key_env`` and is never logged.
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        max_requests: int = 2000,
        system_prompt: str = SYSTEM,
        template: str = TEMPLATE,
    ):
        super().__init__()
        if not base_url or not model:
            raise ConfigError("judge: openai needs judge_params: {base_url: ..., model: ...}.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.max_retries, self.backoff = model, timeout, max_retries, backoff
        self.max_requests, self.requests = max_requests, 0
        self.system_prompt, self.template = system_prompt, template
        self._key = os.environ.get(api_key_env)
        if not self._key:
            logger.info("No API key in $%s: requests go without an Authorization header.", api_key_env)

    def judge_pair(self, prompt: Any, first: str, second: str) -> Any:
        content = self.template.format(prompt=prompt_text(prompt), first=first, second=second)
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 5,
            "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": content}],
        }
        reply = self._post(body)
        result = parse_reply(reply)
        if result is None:
            raise JudgeFailure(f"unparseable reply {reply[:80]!r} (expected A, B or tie)")
        return result

    def _post(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.max_retries + 1):
            if self.requests >= self.max_requests:
                raise JudgeFailure(f"request cap of {self.max_requests} reached")
            self.requests += 1
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode())
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code} from {self.url}"
                if error.code not in RETRYABLE:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                last = f"{type(error).__name__} reaching {self.url}: {getattr(error, 'reason', error)}"
            except (ValueError, KeyError, IndexError, TypeError) as error:
                last = f"malformed response from {self.url}: {type(error).__name__}: {error}"
                break
            if attempt < self.max_retries:
                time.sleep(self.backoff * 2**attempt)
        raise JudgeFailure(f"{last} (after {attempt + 1} attempt{'s' if attempt else ''})")
