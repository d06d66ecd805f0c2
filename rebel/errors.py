"""The harness's exceptions: a leaf module (imports nothing of the project), so any module may raise them."""

from __future__ import annotations


class HarnessError(Exception):
    """A problem with what the user asked for or supplied, reported by the CLI in one line."""


class ConfigError(HarnessError, ValueError):
    """A configuration problem, with a one-line message naming the key and what is allowed."""
