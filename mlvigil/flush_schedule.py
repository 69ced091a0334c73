"""One pending processing-time flush per key, remembered in operator memory, not in Flink state.

Why not state: in a PyFlink 2.3 job restored from a checkpoint (under load, in the restart
test), the writer's restored timers never fired, neither its processing-time flush nor its
next-watermark timer. A "timer pending" flag kept in state then blocked every later flush, and
rows waited forever. In memory, the flag starts empty after a restore, so the first element
schedules a fresh timer, and that flush also writes the rows the checkpoint restored. A restored
timer that does fire only causes one extra, harmless flush.
"""

from typing import Any


class FlushSchedule:
    def __init__(self, interval_ms: int, overdue_ms: int = 5_000):
        self.interval_ms = interval_ms
        # A timer this late has been lost: schedule another (defensive; not seen without restore).
        self.overdue_ms = max(overdue_ms, interval_ms)
        self._due: dict[Any, int] = {}

    def ensure(self, key: Any, timer_service) -> bool:
        """Schedule a flush for key in interval_ms unless one is pending; True if it did."""
        now = timer_service.current_processing_time()
        due = self._due.get(key)
        if due is not None and now <= due + self.overdue_ms:
            return False
        due = now + self.interval_ms
        timer_service.register_processing_time_timer(due)
        self._due[key] = due
        return True

    def fired(self, key: Any) -> None:
        """The flush for key ran: the next element schedules the next one."""
        self._due.pop(key, None)
