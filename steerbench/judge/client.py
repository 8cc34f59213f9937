"""A judge behind any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama,
llama.cpp server, hosted APIs), with the standard library only: timeouts, retries with
exponential backoff on 429/5xx and network errors, a concurrency limit, and a preflight
request that stops a run with one line before any work when the judge cannot answer."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from steerbench.errors import SteerbenchError

log = logging.getLogger(__name__)

PREFLIGHT_MESSAGES = [{"role": "user", "content": "Reply with the digit 1."}]
_KEY_REFUSED = "the API key was refused; set it in the environment variable named by {}.api_key_env"
_HINTS = {
    401: _KEY_REFUSED,
    403: _KEY_REFUSED,
    404: "no chat-completions endpoint or no such judge_model there; check {}.judge_url and "
    "judge_model",
}


def _content(payload: Any) -> Any:
    """``choices[0].message.content`` of an answer (KeyError, IndexError, TypeError if none)."""
    return payload["choices"][0]["message"]["content"]


class HTTPJudge:
    """OpenAI-compatible chat-completions client. ``settings`` names the options the error
    hints point at (``<settings>.judge_url``...), i.e. the metric that configures it."""

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None,
        timeout: float,
        retries: int,
        concurrency: int,
        max_tokens: int,
        *,
        settings: str = "judge",
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.api_key = model, api_key
        self.timeout, self.retries, self.concurrency = timeout, retries, concurrency
        self.max_tokens, self.settings = max_tokens, settings
        self.name = f"http:{model}@{self.url}"

    def request(self, messages: list[dict[str, str]], max_tokens: int) -> urllib.request.Request:
        """The one POST every call sends: greedy (temperature 0), the key as a bearer token."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)

    def _post(self, messages: list[dict[str, str]]) -> str:
        """The judge's answer, or "" (counted as missing) once retries are spent."""
        request = self.request(messages, self.max_tokens)
        delay = 1.0
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                    content = _content(json.loads(answer.read().decode("utf-8")))
                return content if isinstance(content, str) else ""
            except urllib.error.HTTPError as err:
                retryable = err.code == 429 or err.code >= 500
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                retryable, reason = True, str(getattr(err, "reason", err))
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                return ""  # malformed answer: parsed as missing, never retried forever
            if not retryable or attempt == self.retries:
                log.warning("judge request failed (%s); item counted as missing", reason)
                return ""
            time.sleep(delay)
            delay *= 2
        return ""

    def preflight(self) -> None:
        """One request before any work; a judge that cannot answer stops the run with one
        line naming the URL and the problem (instead of an all-missing column later)."""
        where = f"judge at {self.url}"
        request = self.request(PREFLIGHT_MESSAGES, 1)
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 30.0)) as answer:
                payload = json.loads(answer.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            hint = _HINTS.get(err.code, "fix the server or {}.judge_url").format(self.settings)
            raise SteerbenchError(f"{where} answered HTTP {err.code}: {hint}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise SteerbenchError(
                f"{where} is unreachable ({reason}); start the server or fix "
                f"{self.settings}.judge_url"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SteerbenchError(
                f"{where} did not answer JSON; is it an OpenAI-compatible endpoint?"
            ) from None
        try:
            content = _content(payload)
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise SteerbenchError(
                f"{where} answered without choices[0].message.content; is it an "
                f"OpenAI-compatible chat-completions endpoint?"
            )

    def judge(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """One answer per conversation, at most ``concurrency`` requests at a time."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._post, conversations))
