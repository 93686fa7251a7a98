"""Loaded (through PYTHONPATH) only by .ci/run's pass under faketime.

Debian's libfaketime 0.9.10 breaks Python 3.11's time.sleep when the monotonic clock is left real
(FAKETIME_DONT_FAKE_MONOTONIC=1): it shifts clock_nanosleep's absolute monotonic deadline by the
fake offset, and the kernel answers EINVAL (wolfcw/libfaketime#426). Faking the monotonic clock
instead hangs every lock wait with a timeout (sem_clockwait is not intercepted, #390). So the
monotonic clock stays real and sleeps wait on a relative select() timeout, which it leaves alone.
"""

import select
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    select.select([], [], [], seconds)


time.sleep = _sleep
