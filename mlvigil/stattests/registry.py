"""Name -> statistical test, in the manner of Evidently's stattests."""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StatTest:
    name: str
    description: str
    default_threshold: float
    """Drift is flagged when the statistic is strictly greater than this."""
    func: Callable[..., float]


_REGISTRY: dict[str, StatTest] = {}


def register(test: StatTest) -> StatTest:
    if test.name in _REGISTRY:
        raise ValueError(f"stattest {test.name!r} is registered twice")
    _REGISTRY[test.name] = test
    return test


def get_stattest(name: str) -> StatTest:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown stattest {name!r}; known: {sorted(_REGISTRY)}") from None


def registered() -> list[str]:
    return sorted(_REGISTRY)
