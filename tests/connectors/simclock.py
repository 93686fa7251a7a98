"""Test-only: a started simulator's HTTP ``Date`` header on the simulator's own clock.

The simulators stamp records with their clock but answer with ``http.server``'s Date, which is
the system time; a connector measuring the remote clock from Date would then see the system time
while the records say the test's time. Until the simulators send Date from their clock, the
connector tests set it here (on this server's own handler class only)."""

from __future__ import annotations

from email.utils import formatdate

from syncd.simulators.base import Simulator


def date_header_on_simulator_clock(sim: Simulator) -> Simulator:
    assert sim._server is not None, "start the simulator first"
    handler = sim._server.RequestHandlerClass

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(sim.clock.now().timestamp() if timestamp is None else timestamp,
                          usegmt=True)

    handler.date_time_string = date_time_string
    return sim
