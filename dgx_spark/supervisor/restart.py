"""Restart policies of launched operations, as process managers have them (PM2, supervisord).

A launch may say ``"restart": {"policy": "no" | "on-failure" | "always",
"max_restarts": N, "backoff_seconds": S}``. After a run ends on its own (not
stopped by the user), ``on-failure`` starts a new run when it failed and
``always`` whatever the outcome. The wait before restart *k* of a streak
(k = 0, 1, ...) is ``S * 2**k``, at most ``MAX_BACKOFF_SECONDS``. A run that stayed
up ``HEALTHY_SECONDS`` or longer ends the streak: the wait and the count toward
``max_restarts`` start again from zero. Once ``max_restarts`` restarts in a row
failed to stay up, the supervisor gives up and the operation stays ``failed``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

POLICIES = ("no", "on-failure", "always")
# A run that stayed up this long is healthy: the streak (backoff and max_restarts count) resets.
HEALTHY_SECONDS = 60.0
# The longest wait between two runs.
MAX_BACKOFF_SECONDS = 300.0
DEFAULT_MAX_RESTARTS = 5
DEFAULT_BACKOFF_SECONDS = 1.0
MAX_RESTARTS_LIMIT = 1000
BACKOFF_LIMIT = 3600.0


class PolicyError(ValueError):
    """A restart policy that cannot be accepted; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        """Create the error for ``field``."""
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to start a launched operation again after a run ended on its own."""

    policy: str = "no"
    max_restarts: int = DEFAULT_MAX_RESTARTS
    backoff_seconds: float = DEFAULT_BACKOFF_SECONDS

    @property
    def enabled(self) -> bool:
        """Whether this policy ever restarts."""
        return self.policy != "no"

    def wants_restart(self, outcome: str) -> bool:
        """Whether a run that ended with ``outcome`` (not a user stop) calls for a new run."""
        if self.policy == "always":
            return outcome in ("completed", "failed")
        return self.policy == "on-failure" and outcome == "failed"

    def delay(self, streak: int) -> float:
        """Seconds to wait before restart number ``streak + 1`` of the current streak."""
        if self.backoff_seconds <= 0:
            return 0.0
        exponent = min(max(streak, 0), 32)  # 2**32 * anything positive is far past the cap
        return float(min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2**exponent))

    def to_api(self) -> dict[str, Any]:
        """The JSON shape a launch takes."""
        return {"policy": self.policy, "max_restarts": self.max_restarts, "backoff_seconds": self.backoff_seconds}

    def to_json(self) -> str:
        """Stored form (database column)."""
        return json.dumps(self.to_api())

    @classmethod
    def from_json(cls, text: str | None) -> RestartPolicy:
        """Read the stored form; anything unreadable is "no" (never restart by mistake)."""
        try:
            return parse_policy(json.loads(text)) if text else cls()
        except (ValueError, TypeError):
            return cls()


def _number(field: str, value: Any, lo: float, hi: float, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(field, f"must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PolicyError(field, "must be a finite number")
    if integer and not float(value).is_integer():
        raise PolicyError(field, "must be a whole number")
    if not lo <= value <= hi:
        raise PolicyError(field, f"must be between {lo:g} and {hi:g}, got {value}")
    return value


def parse_policy(raw: Any, field: str = "restart") -> RestartPolicy:
    """Validate the ``restart`` object of a launch (None: no restarts).

    Raises:
        PolicyError: Naming the bad field (``restart.policy``, ``restart.max_restarts``...).
    """
    if raw is None:
        return RestartPolicy()
    if isinstance(raw, str):  # shorthand: "on-failure"
        raw = {"policy": raw}
    if not isinstance(raw, Mapping):
        raise PolicyError(field, "must be an object with policy, max_restarts and backoff_seconds")
    unknown = [str(k)[:40] for k in raw if k not in ("policy", "max_restarts", "backoff_seconds")]
    if unknown:
        raise PolicyError(f"{field}.{unknown[0]}", "unknown field")
    policy = raw.get("policy", "no")
    if not isinstance(policy, str) or policy not in POLICIES:
        raise PolicyError(f"{field}.policy", f"must be one of {', '.join(POLICIES)}")
    max_restarts = raw.get("max_restarts", DEFAULT_MAX_RESTARTS)
    max_restarts = int(_number(f"{field}.max_restarts", max_restarts, 0, MAX_RESTARTS_LIMIT, integer=True))
    backoff = raw.get("backoff_seconds", DEFAULT_BACKOFF_SECONDS)
    backoff = float(_number(f"{field}.backoff_seconds", backoff, 0, BACKOFF_LIMIT, integer=False))
    return RestartPolicy(policy, max_restarts, backoff)
