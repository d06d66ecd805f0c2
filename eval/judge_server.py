"""A loopback OpenAI-compatible judge: ``POST /v1/chat/completions`` on 127.0.0.1, with injectable faults.

It lets the embedded pipeline and the tests run the same client code path as GPT-4
(:mod:`eval.judge_client`) offline. Requests are answered by the first *grader* that
accepts them (a grader gets the request JSON and returns a :class:`GraderReply`, or
``None`` for "not my prompt format"); no grader: HTTP 400. The TL;DR pairwise grader of
paper appendix H.1.6 (:func:`tldr_gold_grader`) reads the post and both summaries back
from the judge prompt and answers from the embedded task's gold quality; graders for
other prompt formats (AlpacaEval, MT-Bench) live with their evaluators.

A :class:`FaultPlan` makes the server misbehave as real endpoints do, deterministically
from its seed, the request's hash and the attempt number. The server counts requests,
faults and successful answers per request hash, so tests can check that every judgment
was answered exactly once.

Usage::

    with LoopbackJudgeServer([tldr_gold_grader], faults=FaultPlan(rate_429=0.1)) as server:
        endpoint = Endpoint(base_url=server.base_url, model="embedded-gold", api_key_env="")
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from eval.judges import TLDR_JUDGE_PROMPT, gold_preference
from rebel import synthetic_tldr as task


@dataclass(frozen=True)
class GraderReply:
    text: str
    top_logprobs: list[dict[str, float]] | None = None   # returned in the OpenAI `logprobs.content` format


Grader = Callable[[dict], GraderReply | None]   # gets the request JSON; None = "not my prompt format"


@dataclass(frozen=True)
class FaultPlan:
    """Which requests the server answers badly.

    Transient faults, drawn per (request hash, attempt): ``rate_429`` (HTTP 429, with
    ``Retry-After: retry_after_s`` when that is set), ``rate_500`` (HTTP 500) and
    ``rate_timeout`` (the answer is held for ``delay_s``, past the client's timeout, and not
    counted as a success). Only the first ``max_faults_per_request`` attempts of a request
    can fail, so every request succeeds within that many retries.

    Permanent faults, drawn per request hash (every attempt gets them): ``rate_malformed``
    (HTTP 200 with a reply in no grader's format: no ``Preferred:`` line, no rating) and ``rate_invalid_json`` (HTTP
    200 whose body is not JSON).
    """

    seed: int = 0
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_timeout: float = 0.0
    delay_s: float = 1.0
    retry_after_s: float | None = None
    max_faults_per_request: int = 2
    rate_malformed: float = 0.0
    rate_invalid_json: float = 0.0

    def _uniform(self, *parts: object) -> float:
        digest = hashlib.sha256(":".join(map(str, (self.seed, *parts))).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    def transient(self, request_hash: str, attempt: int) -> str | None:
        """``"429"``, ``"500"``, ``"timeout"`` or None for this attempt (0-based) of a request."""
        if attempt >= self.max_faults_per_request:
            return None
        u = self._uniform(request_hash, attempt)
        for kind, rate in (("429", self.rate_429), ("500", self.rate_500), ("timeout", self.rate_timeout)):
            if u < rate:
                return kind
            u -= rate
        return None

    def permanent(self, request_hash: str) -> str | None:
        """``"malformed"``, ``"invalid_json"`` or None for every attempt of a request."""
        u = self._uniform(request_hash, "permanent")
        if u < self.rate_malformed:
            return "malformed"
        return "invalid_json" if u < self.rate_malformed + self.rate_invalid_json else None


def _prompt_tokens(request: dict[str, Any]) -> int:
    """Whitespace words of all messages: the loopback server's stand-in for a tokenizer's count."""
    return sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))


class LoopbackJudgeServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (port 0: an ephemeral port), as a context manager.

    Counters (thread-safe): ``requests_total``, ``requests_by_hash`` (attempts per request
    hash), ``successes_by_hash`` (well-formed answers per hash), ``faults`` (per kind).
    ``api_key``, when set, must arrive as ``Authorization: Bearer <key>`` (else HTTP 401).
    """

    def __init__(self, graders: list[Grader], faults: FaultPlan | None = None, *, port: int = 0,
                 api_key: str | None = None):
        self.graders = list(graders)
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.requests_total = 0
        self.requests_by_hash: Counter[str] = Counter()
        self.successes_by_hash: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-judge", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "LoopbackJudgeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # no stderr line per request
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._json(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
                try:
                    request = json.loads(body)
                except ValueError:
                    return self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
                status, payload, headers = server._answer(request)
                if payload is None:  # invalid JSON on purpose
                    return self._send(200, b'{"id": "chatcmpl-loopback", "choices": [', {})
                self._json(status, payload, headers)

            def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                self._send(status, json.dumps(payload).encode(), headers or {})

            def _send(self, status: int, data: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
                    pass

        return Handler

    def _answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        with self._lock:
            attempt = self.requests_by_hash[request_hash]
            self.requests_total += 1
            self.requests_by_hash[request_hash] += 1
        fault = self.faults.transient(request_hash, attempt)
        if fault is not None:
            with self._lock:
                self.faults_injected[fault] += 1
        if fault == "429":
            headers = {} if self.faults.retry_after_s is None else {"Retry-After": str(self.faults.retry_after_s)}
            return 429, {"error": {"message": "rate limited", "type": "rate_limit_error"}}, headers
        if fault == "500":
            return 500, {"error": {"message": "internal error", "type": "server_error"}}, {}
        if fault == "timeout":
            time.sleep(self.faults.delay_s)
        reply = next((r for r in (g(request) for g in self.graders) if r is not None), None)
        if reply is None:
            return 400, {"error": {"message": "no grader accepts this prompt", "type": "invalid_request_error"}}, {}
        permanent = self.faults.permanent(request_hash)
        if permanent is not None:
            with self._lock:
                self.faults_injected[permanent] += 1
            if permanent == "invalid_json":
                return 200, None, {}
            reply = GraderReply(text="I cannot decide which answer is better.")
        elif fault is None:
            with self._lock:
                self.successes_by_hash[request_hash] += 1
        return 200, self._completion(request, reply), {}

    @staticmethod
    def _completion(request: dict[str, Any], reply: GraderReply) -> dict[str, Any]:
        logprobs = None
        if request.get("logprobs") and reply.top_logprobs is not None:
            logprobs = {"content": [
                {"token": max(top, key=top.get), "logprob": max(top.values()), "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()]}
                for top in reply.top_logprobs]}
        completion_tokens = len(reply.text.split())
        return {"id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": "stop", "logprobs": logprobs}],
                "usage": {"prompt_tokens": _prompt_tokens(request), "completion_tokens": completion_tokens,
                          "total_tokens": _prompt_tokens(request) + completion_tokens}}


_HEAD, _REST = TLDR_JUDGE_PROMPT.split("{post}")
_BETWEEN_POST_AND_A, _REST = _REST.split("{summary_a}")
_BETWEEN_A_AND_B, _TAIL = _REST.split("{summary_b}")


def parse_tldr_prompt(content: str) -> tuple[str, str, str] | None:
    """(post, summary A, summary B) from an appendix H.1.6 prompt, or None for another prompt.
    The parts are separated by the prompt's fixed headers (a summary containing
    ``### Summary B:`` would be ambiguous; the embedded task's never do)."""
    if not (content.startswith(_HEAD) and content.endswith(_TAIL)):
        return None
    body = content[len(_HEAD): len(content) - len(_TAIL)]
    post, sep, summaries = body.partition(_BETWEEN_POST_AND_A)
    a, sep2, b = summaries.partition(_BETWEEN_A_AND_B)
    return (post, a, b) if sep and sep2 else None


def tldr_gold_grader(request: dict) -> GraderReply | None:
    """The TL;DR judge of appendix H.1.6 backed by the embedded gold quality.

    Answers ``Comparison: <one sentence>`` / ``Preferred: A|B`` with the same decision as
    :class:`eval.judges.GoldJudge` (:func:`eval.judges.gold_preference`: equal quality is
    "A"), so a winrate judged through this server equals the one judged directly.
    """
    messages = request.get("messages") or [None]
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    parsed = parse_tldr_prompt(content) if isinstance(content, str) else None
    if parsed is None:
        return None
    post, a, b = parsed
    preferred = gold_preference(post, a, b)
    qa, qb = task.gold_quality(post, a), task.gold_quality(post, b)
    return GraderReply(f"Comparison: Summary {preferred} covers the post's important points at least as well, "
                       f"with fewer irrelevant or invented details (gold quality {qa:.2f} vs {qb:.2f}).\n"
                       f"Preferred: {preferred}")
