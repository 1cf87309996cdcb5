"""The project's two exceptions: bad input, and a run that cannot give what was asked of it."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value or invocation; the message is one line naming key, value and rule."""


class RunError(RuntimeError):
    """A computation that ran but cannot deliver its result (e.g. a comparison whose reference flow stopped
    early); the message is one line saying what happened and when."""
