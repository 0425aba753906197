"""The ``openai`` judge: any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, …).

Standard library only (urllib). The API key is read from an environment variable and goes only into
the Authorization header: never into logs or error messages (it is redacted from server replies),
and never to another host (redirects are refused).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import ConfigError
from .base import (
    COMPARISON_TEMPLATE,
    FIRST,
    SECOND,
    TIE,
    Judge,
    JudgeFailure,
    check_template,
    non_negative,
    positive_int,
    prompt_text,
)

logger = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    "You are an impartial judge comparing two responses to the same question. "
    "Reply with exactly one of: A (response A is better), B (response B is better), tie."
)
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_LABELS = {"a": FIRST, "b": SECOND, "tie": TIE}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_reply(text: str) -> float | None:
    """A judge's reply → 0 (A), 1 (B), 0.5 (tie), or None when it names no label or more than one.

    The reply is first read whole without markup and punctuation (``"A"``, ``"**b**"``, ``"Tie."``);
    otherwise it must mention exactly one label: a standalone capital ``A`` or ``B``, or the word
    "tie" (``"Answer: B"``, ``"Response A is better."``, ``"It's a tie"``).
    """
    bare = re.sub(r"[\W_]+", " ", text).strip().lower()
    if bare in _LABELS:
        return _LABELS[bare]
    mentioned = {TIE} if re.search(r"\btie\b", text, flags=re.IGNORECASE) else set()
    without_ties = re.sub(r"\ba\s+tie\b", " ", text, flags=re.IGNORECASE)
    mentioned |= {_LABELS[label.lower()] for label in re.findall(r"(?<![\w'])([AB])(?![\w'])", without_ties)}
    return mentioned.pop() if len(mentioned) == 1 else None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect becomes an HTTP error: a POST is not re-sent, and the key never reaches another host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class OpenAIJudge(Judge):
    """POSTs ``{base_url}/chat/completions`` once per pair (temperature 0) and parses A, B or tie.

    ``api_key_env`` names the environment variable holding the key (no Authorization header when it
    is unset, as local servers need none). Each request waits at most ``timeout`` seconds; timeouts,
    connection errors and HTTP 408/409/425/429/5xx are retried ``max_retries`` times after
    ``backoff·2^k`` seconds. Every attempt counts towards ``max_requests``; beyond it, pairs fail
    with that reason. ``concurrency`` pairs are in flight at once.
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
        max_tokens: int = 8,
        concurrency: int = 1,
        system_prompt: str = SYSTEM_PROMPT,
        template: str = COMPARISON_TEMPLATE,
    ):
        super().__init__()
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")) or not model:
            raise ConfigError(
                "judge: openai needs judge_params: {base_url: 'http(s)://host/v1', model: NAME} "
                f"(got base_url={base_url!r}, model={model!r})."
            )
        if not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env):
            raise ConfigError(
                "judge_params.api_key_env must be the name of an environment variable (e.g. OPENAI_API_KEY), "
                "not the key itself: export the key in that variable."
            )
        self.timeout = non_negative("timeout", timeout)
        if self.timeout == 0:
            raise ConfigError("judge_params.timeout must be > 0 seconds.")
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model, self.system_prompt, self.template = model, system_prompt, check_template(template)
        self.backoff = non_negative("backoff", backoff)
        self.max_retries = int(non_negative("max_retries", max_retries))
        self.max_requests, self.max_tokens = (
            positive_int("max_requests", max_requests),
            positive_int("max_tokens", max_tokens),
        )
        self.concurrency = positive_int("concurrency", concurrency)
        self.requests = 0
        self._lock = threading.Lock()
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self._api_key = os.environ.get(api_key_env) or None
        if self._api_key is None:
            logger.info("No API key in $%s: requests to %s go without an Authorization header.", api_key_env, self.url)

    def judge_batch(self, prompts: list[Any], first: list[str], second: list[str]) -> list[float | None]:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            verdicts = pool.map(self.safe_pair, prompts, first, second)
            return list(tqdm(verdicts, total=len(prompts), desc=self.progress_label, leave=False))

    def judge_pair(self, prompt: Any, first: str, second: str) -> float:
        question = self.template.format(prompt=prompt_text(prompt), first=first, second=second)
        reply = self._complete(
            {
                "model": self.model,
                "messages": [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": question}],
                "temperature": 0,
                "max_tokens": self.max_tokens,
            }
        )
        result = parse_reply(reply)
        if result is None:
            raise JudgeFailure(f"unparseable reply {reply[:100]!r} (expected A, B or tie)")
        return result

    def _complete(self, body: dict[str, Any]) -> str:
        """The reply text, after up to ``max_retries`` retries; a JudgeFailure with the last reason otherwise."""
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self._count_request()
            try:
                with self._opener.open(self._request(data), timeout=self.timeout) as response:
                    payload = json.loads(self._read(response))
            except urllib.error.HTTPError as error:
                reason = f"HTTP {error.code} from {self.url}{self._server_message(error)}"
                if error.code not in RETRYABLE_STATUS:
                    break
            except (OSError, http.client.HTTPException) as error:  # refused, reset, timed out (URLError is an OSError)
                reason = f"{type(error).__name__} reaching {self.url}: {getattr(error, 'reason', error)}"
            except ValueError as error:
                reason = f"malformed JSON from {self.url}: {error}"
                break
            else:
                return _reply_text(payload)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        raise JudgeFailure(f"{reason} (after {attempts})")

    def _count_request(self) -> None:
        with self._lock:
            if self.requests >= self.max_requests:
                raise JudgeFailure(f"request cap of {self.max_requests} reached (judge_params.max_requests)")
            self.requests += 1

    def _request(self, data: bytes) -> urllib.request.Request:
        request = urllib.request.Request(
            self.url, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        if self._api_key:
            request.add_unredirected_header("Authorization", f"Bearer {self._api_key}")
        return request

    def _read(self, response: Any) -> str:
        """A response body as text, with the API key (should the server echo it) replaced by ``***``."""
        text = response.read().decode("utf-8", "replace")
        return text.replace(self._api_key, "***") if self._api_key else text

    def _server_message(self, error: urllib.error.HTTPError) -> str:
        """``": <the server's error message>"`` (at most 200 characters), or ``""``."""
        try:
            with error:
                raw = self._read(error)
        except (OSError, http.client.HTTPException):
            return ""
        try:
            message = json.loads(raw)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = raw
        message = " ".join(str(message).split())[:200]
        return f": {message}" if message else ""


def _reply_text(payload: Any) -> str:
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise JudgeFailure(f"the response has no choices[0].message.content: {str(payload)[:200]}") from None
    if not isinstance(content, str):
        raise JudgeFailure(f"the reply's content is {content!r}, not text")
    return content
