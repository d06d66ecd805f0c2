"""A fault-tolerant client for OpenAI-compatible chat endpoints (GPT-4, a vLLM server, the loopback judge).

Judge calls are paid, rate-limited and flaky, and an evaluation must run unattended, never
lose or duplicate a judgment, and cost nothing to rerun:

- **retries** are done here (the ``openai`` client's own are off), bounded by
  ``max_retries`` and counted: exponential backoff with full jitter (a delay drawn
  uniformly from ``[0, min(backoff_max_s, backoff_s · 2^attempt)]``) on 408, 409, 429,
  5xx, timeouts, connection errors and unreadable response bodies; a ``Retry-After`` /
  ``retry-after-ms`` header is honoured, capped at ``backoff_max_s``. Other 4xx answers
  (a bad key, an unknown model) stop the run with one line: retrying cannot fix them;
- **bounded concurrency**: at most ``concurrency`` requests in flight (a thread pool);
- **disk cache**: an append-only JSONL file, one line per finished reply, written (under
  an exclusive lock, ``O_APPEND``, flushed and fsynced) as each reply arrives, keyed by
  (model, SHA-256 of the full request). A killed run loses at most the calls in flight; a
  truncated last line is ignored on load; a rerun makes no call for what is cached.
  Replies that failed after all retries are not cached, so a rerun asks again;
- **the API key** is read from the environment variable named by ``api_key_env`` when a
  call is about to be made, handed to the ``openai`` client and nowhere else: it is never
  logged, never part of an error message, never written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rebel.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

NO_KEY = "EMPTY"
"""Sent when ``api_key_env`` is empty: a self-hosted server started without ``--api-key`` accepts any key."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call a judge; the API key is read from ``os.environ[api_key_env]`` at call time only."""

    base_url: str
    model: str
    api_key_env: str
    timeout_s: float = 60.0
    max_retries: int = 6
    concurrency: int = 8
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    usd_per_million_input_tokens: float = 0.0
    usd_per_million_output_tokens: float = 0.0

    @classmethod
    def from_config(cls, section: dict, where: str = "eval.judge") -> Endpoint:
        """From a config section holding every field (extra keys such as ``type`` are ignored);
        a missing or mistyped key is a one-line :class:`ConfigError` naming it."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in section:
                raise ConfigError(f"key '{where}.{f.name}' is missing")
            value, kind = section[f.name], {"str": str, "int": int, "float": (int, float)}[f.type]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigError(f"key '{where}.{f.name}': {value!r} is not of type {f.type}")
            values[f.name] = value
        endpoint = cls(**values)
        for name in ("timeout_s", "concurrency", "backoff_s", "backoff_max_s"):
            if getattr(endpoint, name) <= 0:
                raise ConfigError(f"key '{where}.{name}': {getattr(endpoint, name)!r} must be positive")
        for name in ("max_retries", "usd_per_million_input_tokens", "usd_per_million_output_tokens"):
            if getattr(endpoint, name) < 0:
                raise ConfigError(f"key '{where}.{name}': {getattr(endpoint, name)!r} must not be negative")
        if not re.fullmatch(r"(https?://\S+)", endpoint.base_url):
            raise ConfigError(f"key '{where}.base_url': {endpoint.base_url!r} is not an http(s) URL")
        return endpoint

    def api_key(self) -> str:
        """The key from the environment; a missing variable is a one-line error naming it (never the value)."""
        if not self.api_key_env:
            return NO_KEY
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"environment variable {self.api_key_env} (eval.judge.api_key_env) is not set; "
                f"export the judge endpoint's API key in it"
            )
        return key

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.usd_per_million_input_tokens + completion_tokens * self.usd_per_million_output_tokens
        ) / 1e6


@dataclass(frozen=True)
class Reply:
    text: str | None  # None: no usable reply after all retries (counted, never a win)
    top_logprobs: list[dict[str, float]] | None  # per generated token, token -> logprob, when asked for
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    error: str | None


@dataclass
class Usage:
    """Running totals of one client: calls made, cache hits, retries, failures, tokens, estimated cost."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


class FatalEndpointError(HarnessError):
    """An answer that retrying cannot change (a bad key, an unknown model, a malformed request)."""


class _Retryable(Exception):
    def __init__(self, error: str, retry_after: float | None = None):
        super().__init__(error)
        self.retry_after = retry_after


def request_key(request: dict[str, Any]) -> str:
    """SHA-256 of the full request (model, messages, sampling settings), canonical JSON."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ReplyCache:
    """Append-only JSONL of finished replies keyed by (model, request SHA-256), safe for concurrent writers.

    Each line is written by one ``write`` on an ``O_APPEND`` descriptor under an exclusive
    ``flock`` and fsynced before the reply is returned, so several evaluate jobs may share a file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], dict[str, Any]] = {}
        if path.is_file():
            lines = path.read_bytes().split(b"\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._entries[(entry["model"], entry["key"])] = entry["reply"]
                except (ValueError, KeyError, TypeError):
                    # A killed writer leaves at most a truncated last line; anything else is reported.
                    if number != len(lines):
                        log.warning("judge cache %s: unreadable line %d ignored", path, number)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model: str, key: str) -> dict[str, Any] | None:
        return self._entries.get((model, key))

    def put(self, model: str, key: str, reply: dict[str, Any]) -> None:
        line = json.dumps({"model": model, "key": key, "reply": reply}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":  # after a killed writer's partial line
                    line = "\n" + line
                os.write(fd, line.encode())
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the lock
            self._entries[(model, key)] = reply


class ChatClient:
    """Chat completions with bounded retries and concurrency, and a disk cache (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, cache_path: Path):
        self.endpoint = endpoint
        self.cache = ReplyCache(Path(cache_path))
        self.usage = Usage()
        self._usage_lock = threading.Lock()
        self._rng = random.Random()

    def complete(
        self,
        conversations: list[list[dict[str, str]]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_logprobs: int | None = None,
    ) -> list[Reply]:
        """One reply per conversation (OpenAI chat messages), in order; bounded concurrency; retries on 429,
        5xx, timeouts and connection errors; every reply cached on disk keyed by (model, sha256 of the full
        request); cached ones cost no call. Identical requests in one batch are sent once."""
        requests = [self._request(c, max_tokens, temperature, top_logprobs) for c in conversations]
        keys = [request_key(r) for r in requests]
        replies: dict[str, Reply] = {}
        todo: dict[str, dict[str, Any]] = {}
        for key, request in zip(keys, requests):
            hit = self.cache.get(self.endpoint.model, key)
            if hit is not None:
                replies[key] = Reply(**hit, cached=True, error=None)
            else:
                todo.setdefault(key, request)
        with self._usage_lock:
            self.usage.cache_hits += len(keys) - sum(k in todo for k in keys)
        if todo:
            client = self._openai_client()
            with ThreadPoolExecutor(max_workers=min(self.endpoint.concurrency, len(todo))) as pool:
                futures = {key: pool.submit(self._call, client, key, request) for key, request in todo.items()}
                try:
                    for key, future in futures.items():
                        replies[key] = future.result()
                except BaseException:  # a fatal answer or an interrupt: no new calls, finished ones are cached
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        u = self.usage
        log.info(
            "judge %s: %d replies (%d cached), %d requests, %d retries, %d failures so far; "
            "tokens %d in / %d out, estimated cost $%.4f",
            self.endpoint.model,
            len(keys),
            len(keys) - len(todo),
            u.requests,
            u.retries,
            u.failures,
            u.prompt_tokens,
            u.completion_tokens,
            u.cost_usd,
        )
        return [replies[k] for k in keys]

    def _request(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, top_logprobs: int | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if top_logprobs is not None:
            request |= {"logprobs": True, "top_logprobs": top_logprobs}
        return request

    def _openai_client(self) -> Any:
        import openai

        return openai.OpenAI(
            base_url=self.endpoint.base_url,
            api_key=self.endpoint.api_key(),
            max_retries=0,
            timeout=self.endpoint.timeout_s,
        )

    def _call(self, client: Any, key: str, request: dict[str, Any]) -> Reply:
        """One request with bounded, jittered retries; the finished reply is cached before it is returned."""
        error, retry_after = "no attempt", None
        for attempt in range(self.endpoint.max_retries + 1):
            if attempt:
                with self._usage_lock:
                    self.usage.retries += 1
                    cap = min(self.endpoint.backoff_max_s, self.endpoint.backoff_s * 2 ** (attempt - 1))
                    delay = self._rng.uniform(0.0, cap)
                time.sleep(delay if retry_after is None else min(retry_after, self.endpoint.backoff_max_s))
            with self._usage_lock:
                self.usage.requests += 1
            try:
                reply = self._attempt(client, request)
            except _Retryable as exc:
                error, retry_after = str(exc), exc.retry_after
                log.debug("judge request %s… attempt %d failed: %s", key[:12], attempt + 1, error)
                continue
            with self._usage_lock:
                self.usage.prompt_tokens += reply["prompt_tokens"]
                self.usage.completion_tokens += reply["completion_tokens"]
                self.usage.cost_usd += self.endpoint.cost_usd(reply["prompt_tokens"], reply["completion_tokens"])
            self.cache.put(self.endpoint.model, key, reply)
            return Reply(**reply, cached=False, error=None)
        with self._usage_lock:
            self.usage.failures += 1
        log.warning("judge request %s… failed after %d attempts: %s", key[:12], self.endpoint.max_retries + 1, error)
        return Reply(text=None, top_logprobs=None, prompt_tokens=0, completion_tokens=0, cached=False, error=error)

    def _attempt(self, client: Any, request: dict[str, Any]) -> dict[str, Any]:
        """One HTTP request: the reply's fields, or :class:`_Retryable`; a non-retryable answer raises.
        Error texts carry the status and exception type only, never the server's message (it may echo the key)."""
        import openai

        try:
            response = client.chat.completions.create(**request)
            choice = response.choices[0]
            text = choice.message.content or ""
            logprobs = None
            if request.get("logprobs") and choice.logprobs is not None and choice.logprobs.content is not None:
                logprobs = [{t.token: t.logprob for t in token.top_logprobs} for token in choice.logprobs.content]
            usage = response.usage
            return {
                "text": text,
                "top_logprobs": logprobs,
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0,
            }
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (408, 409, 429) or status >= 500:  # the statuses the openai client itself retries
                raise _Retryable(f"HTTP {status}", _retry_after(exc.response.headers)) from None
            raise FatalEndpointError(
                f"judge endpoint {self.endpoint.base_url} answered HTTP {status} "
                f"({type(exc).__name__}) for model '{self.endpoint.model}'"
                + (_key_hint(self.endpoint.api_key_env) if status in (401, 403) else "")
            ) from None
        except openai.APITimeoutError:
            raise _Retryable(f"timeout after {self.endpoint.timeout_s} s") from None
        except openai.APIConnectionError as exc:
            raise _Retryable(f"connection error ({type(exc.__cause__ or exc).__name__})") from None
        except (openai.APIResponseValidationError, ValueError, AttributeError, IndexError, TypeError) as exc:
            raise _Retryable(f"unreadable response ({type(exc).__name__})") from None


def _key_hint(api_key_env: str) -> str:
    return f"; check the key in ${api_key_env}" if api_key_env else "; no key was sent (api_key_env is empty)"


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds; an HTTP date is ignored)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
