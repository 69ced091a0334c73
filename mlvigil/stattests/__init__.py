"""Drift statistics, one small module per test, registered by name with a default threshold.

Pure numpy: no Flink import, so the job, the tests, backtests and benchmarks share them.
"""

from mlvigil.stattests import ks as _ks  # noqa: F401  (registers "ks")
from mlvigil.stattests import psi as _psi  # noqa: F401  (registers "psi")
from mlvigil.stattests.registry import StatTest, get_stattest, register, registered

__all__ = ["StatTest", "get_stattest", "register", "registered"]
