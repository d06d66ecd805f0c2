"""A loopback OpenAI-compatible judge: ``POST /v1/chat/completions`` on 127.0.0.1.

It lets the embedded pipeline and the tests run the same client code path as GPT-4
(:mod:`eval.judge_client`) offline. Requests are answered by the first *grader* that
accepts them (a grader gets the request JSON and returns a :class:`GraderReply`, or
``None`` for "not my prompt format"); no grader: HTTP 400. Graders live with the
evaluators of their prompt format: the TL;DR pairwise grader of paper appendix H.1.6 is
:func:`eval.judges.tldr_gold_grader`, the AlpacaEval and MT-Bench ones are in
:mod:`eval.chat_graders`. The server imports nothing of the project.

The server counts requests and successful answers per request hash, so tests can check
that every judgment was answered exactly once. An *interceptor* (``intercept=``) wraps the
server's answer to each request: it gets the :class:`Exchange` (the request, its hash, the
attempt number) and a function returning the server's own :class:`Response`, and returns the
response to send; the tests make the server misbehave as real endpoints do through one
(``tests/fault_injection.py``).

Usage::

    with LoopbackJudgeServer([tldr_gold_grader]) as server:
        endpoint = Endpoint(base_url=server.base_url, model="embedded-gold", api_key_env="")
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class GraderReply:
    text: str
    top_logprobs: list[dict[str, float]] | None = None  # returned in the OpenAI `logprobs.content` format


Grader = Callable[[dict], GraderReply | None]  # gets the request JSON; None = "not my prompt format"


@dataclass(frozen=True)
class Exchange:
    """One request as the server received it."""

    request: dict[str, Any]
    request_hash: str
    """SHA-256 of the request JSON (keys sorted): the same judgment asked again has the same hash."""
    attempt: int
    """How many times this request arrived before (0: the first time)."""


@dataclass(frozen=True)
class Response:
    """An HTTP response of the server: status, body and extra headers (the body is sent as JSON)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    answered: bool = False
    """A well-formed answer that reaches the client: counted in ``successes_by_hash``."""

    @classmethod
    def json(
        cls, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None, *, answered: bool = False
    ) -> Response:
        return cls(status, json.dumps(payload).encode(), dict(headers or {}), answered)

    @classmethod
    def error(cls, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> Response:
        """An OpenAI-style error body."""
        return cls.json(status, {"error": {"message": message, "type": kind}}, headers)


Interceptor = Callable[[Exchange, Callable[[], Response]], Response]
"""Wraps the answer to one request: gets the exchange and a function returning the server's own
answer (it may call it or not), returns the response to send."""


def _prompt_tokens(request: dict[str, Any]) -> int:
    """Whitespace words of all messages: the loopback server's stand-in for a tokenizer's count."""
    return sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))


def chat_completion(request: dict[str, Any], reply: GraderReply) -> dict[str, Any]:
    """The OpenAI chat-completion body answering ``request`` with ``reply`` (with ``logprobs.content``
    when the request asks for log-probs and the reply has them)."""
    logprobs = None
    if request.get("logprobs") and reply.top_logprobs is not None:
        logprobs = {
            "content": [
                {
                    "token": max(top, key=top.get),
                    "logprob": max(top.values()),
                    "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
                }
                for top in reply.top_logprobs
            ]
        }
    completion_tokens = len(reply.text.split())
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": _prompt_tokens(request),
            "completion_tokens": completion_tokens,
            "total_tokens": _prompt_tokens(request) + completion_tokens,
        },
    }


class LoopbackJudgeServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (port 0: an ephemeral port), as a context manager.

    Counters (thread-safe): ``requests_total``, ``requests_by_hash`` (attempts per request
    hash), ``successes_by_hash`` (well-formed answers per hash, :attr:`Response.answered`).
    ``api_key``, when set, must arrive as ``Authorization: Bearer <key>`` (else HTTP 401).
    ``intercept``, when set, wraps the answer to every chat-completion request (see the module docstring).
    """

    def __init__(
        self, graders: list[Grader], *, port: int = 0, api_key: str | None = None, intercept: Interceptor | None = None
    ):
        self.graders = list(graders)
        self.api_key = api_key
        self.intercept = intercept
        self.requests_total = 0
        self.requests_by_hash: Counter[str] = Counter()
        self.successes_by_hash: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="loopback-judge", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> LoopbackJudgeServer:
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
                    return self._reply(Response.error(404, f"no route {self.path}", "not_found"))
                if server.api_key is not None and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._reply(Response.error(401, "invalid API key", "invalid_request_error"))
                try:
                    request = json.loads(body)
                except ValueError:
                    return self._reply(Response.error(400, "body is not JSON", "invalid_request_error"))
                self._reply(server._respond(request))

            def _reply(self, response: Response) -> None:
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(response.body)))
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(response.body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

        return Handler

    def _respond(self, request: dict[str, Any]) -> Response:
        request_hash = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        with self._lock:
            attempt = self.requests_by_hash[request_hash]
            self.requests_total += 1
            self.requests_by_hash[request_hash] += 1
        if self.intercept is None:
            response = self.answer(request)
        else:
            response = self.intercept(Exchange(request, request_hash, attempt), lambda: self.answer(request))
        if response.answered:
            with self._lock:
                self.successes_by_hash[request_hash] += 1
        return response

    def answer(self, request: dict[str, Any]) -> Response:
        """The server's own answer: the first accepting grader's reply as a chat completion, or HTTP 400."""
        reply = next((r for r in (g(request) for g in self.graders) if r is not None), None)
        if reply is None:
            return Response.error(400, "no grader accepts this prompt", "invalid_request_error")
        return Response.json(200, chat_completion(request, reply), answered=True)
