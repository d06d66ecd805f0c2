"""Test-only fault injection for the loopback judge server (:mod:`eval.judge_server`).

A :class:`FaultPlan` says which requests the server answers badly, deterministically from
its seed, the request's hash and the attempt number; :class:`FaultyJudgeServer` is a
:class:`~eval.judge_server.LoopbackJudgeServer` whose interceptor follows the plan and counts
the faults it injected per kind (``faults_injected``).

Usage::

    with FaultyJudgeServer([tldr_gold_grader], faults=FaultPlan(rate_429=0.1)) as server:
        endpoint = Endpoint(base_url=server.base_url, model="embedded-gold", api_key_env="")
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from eval.judge_server import Exchange, Grader, GraderReply, LoopbackJudgeServer, Response, chat_completion

MALFORMED_REPLY = "I cannot decide which answer is better."
"""The reply of a ``malformed`` fault: in no grader's format (no ``Preferred:`` line, no rating)."""

INVALID_JSON_BODY = b'{"id": "chatcmpl-loopback", "choices": ['
"""The body of an ``invalid_json`` fault: HTTP 200, cut off mid-JSON."""


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
        return int.from_bytes(digest[:8], "big") / 2**64

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


class FaultInjector:
    """An interceptor of :class:`~eval.judge_server.LoopbackJudgeServer` that answers as ``plan`` says;
    ``injected`` counts the faults per kind (thread-safe)."""

    def __init__(self, plan: FaultPlan):
        self.plan = plan
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] += 1

    def __call__(self, exchange: Exchange, answer: Callable[[], Response]) -> Response:
        plan = self.plan
        fault = plan.transient(exchange.request_hash, exchange.attempt)
        if fault is not None:
            self._count(fault)
        if fault == "429":
            headers = {} if plan.retry_after_s is None else {"Retry-After": str(plan.retry_after_s)}
            return Response.error(429, "rate limited", "rate_limit_error", headers)
        if fault == "500":
            return Response.error(500, "internal error", "server_error")
        if fault == "timeout":
            time.sleep(plan.delay_s)
        response = answer()
        if response.status != 200:  # no grader accepts the prompt: no permanent fault either
            return response
        permanent = plan.permanent(exchange.request_hash)
        if permanent is not None:
            self._count(permanent)
            if permanent == "invalid_json":
                return Response(200, INVALID_JSON_BODY)
            return Response.json(200, chat_completion(exchange.request, GraderReply(MALFORMED_REPLY)))
        # A reply held past the client's timeout does not reach it: no success.
        return response if fault is None else replace(response, answered=False)


class FaultyJudgeServer(LoopbackJudgeServer):
    """The loopback server answering as ``faults`` says (no faults: as the plain server); the faults
    it injected, per kind, in ``faults_injected``."""

    def __init__(
        self, graders: list[Grader], faults: FaultPlan | None = None, *, port: int = 0, api_key: str | None = None
    ):
        self.faults = faults or FaultPlan()
        self._injector = FaultInjector(self.faults)
        super().__init__(graders, port=port, api_key=api_key, intercept=self._injector)

    @property
    def faults_injected(self) -> Counter[str]:
        return self._injector.injected
