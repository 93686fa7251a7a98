"""Issue 9 on the connector side, with the real pysnow and jira clients against the simulators:
a lapsed claim stops a connector between two requests, remote times are read on syncd's clock,
only the integration user's own comments are ever taken for syncd's, and what a quiet poll and a
burst of creates cost."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from syncd.clock import ManualClock
from syncd.connectors.base import SyncCursor, TransientRemoteError
from syncd.connectors.http import ClockOffset, RetryPolicy, request_guard
from syncd.connectors.jira import JiraConnector
from syncd.connectors.servicenow import ServiceNowConnector
from syncd.simulators.base import Fault
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from tests.connectors.simclock import date_header_on_simulator_clock

SN_START = datetime(2026, 1, 22, 12, 0, 0, tzinfo=timezone.utc)
HOURS_BEHIND = timedelta(hours=3)       # syncd's clock is three hours behind the remotes'


class ClaimLost(Exception):
    """What the outbox's guard raises when another worker has taken the row."""


class Guard:
    """A guard that lets ``allowed`` checks pass, then raises ``error``; counts every check."""

    def __init__(self, allowed: int, error: BaseException | None = None):
        self.allowed = allowed
        self.calls = 0
        self.error = error or ClaimLost("outbox row 7: claimed by worker-2 since fencing token 12")

    def __call__(self) -> None:
        self.calls += 1
        if self.calls > self.allowed:
            raise self.error


class Clocks:
    """The remote's clock and syncd's, three hours apart, moved together."""

    def __init__(self):
        self.remote = ManualClock(SN_START)
        self.local = ManualClock(SN_START - HOURS_BEHIND)

    def advance(self, seconds: float) -> None:
        self.remote.advance(seconds)
        self.local.advance(seconds)


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def sn_sim(clocks):
    simulator = date_header_on_simulator_clock(
        ServiceNowSimulator(users={"syncd.integration": "pw"}, clock=clocks.remote).start())
    yield simulator
    simulator.stop()


@pytest.fixture
def sn(sn_sim, clocks):
    connector = ServiceNowConnector("sn", url=sn_sim.base_url, username="syncd.integration",
                                    password="pw", clock=clocks.local, timeout=5)
    yield connector
    connector.close()


@pytest.fixture(params=["Cloud", "Server"])
def jira_sim(request, clocks):
    simulator = date_header_on_simulator_clock(
        JiraSimulator(deployment=request.param, clock=clocks.remote).start())
    yield simulator
    simulator.stop()


@pytest.fixture
def jira(jira_sim, clocks):
    connector = JiraConnector("jira", url=jira_sim.base_url, username="syncd",
                              token="syncd-api-token", project="OPS", clock=clocks.local,
                              timeout=5, policy=RetryPolicy(max_attempts=3, max_total_seconds=30))
    connector.check_auth()
    connector.fetch_changes(SyncCursor())       # server info and the field list, read once
    yield connector
    connector.close()


def sent(sim) -> list[str]:
    return [f"{r.method} {r.path}" for r in sim.request_log()]


# -- A. a lapsed claim stops the connector before its next request ------------------------------

def test_a_claim_lost_after_the_create_stops_a_jira_create_before_its_next_request(jira, jira_sim):
    jira_sim.clear_request_log()
    guard = Guard(allowed=1)
    with request_guard(guard), pytest.raises(ClaimLost) as raised:
        jira.create({"summary": "Checkout is down", "status": "In Progress"},
                    correlation_id="inc-1")
    assert raised.value is guard.error            # unchanged: not wrapped, not retried
    assert sent(jira_sim) == ["POST /rest/api/2/issue"]      # no read, no transition
    assert guard.calls == 2


def test_a_lost_claim_keeps_a_servicenow_update_from_being_sent(sn, sn_sim):
    record = sn_sim.human_create({"short_description": "Disk full"})
    sn_sim.clear_request_log()
    guard = Guard(allowed=0)
    with request_guard(guard), pytest.raises(ClaimLost) as raised:
        sn.update(record["sys_id"], {"state": "6"})
    assert raised.value is guard.error
    assert sent(sn_sim) == []
    assert sn_sim.get_incident(record["sys_id"])["state"] == record["state"]


def test_the_guard_runs_before_every_attempt_and_every_wait_between_retries(sn, sn_sim):
    record = sn_sim.human_create({"short_description": "Disk full"})
    sn_sim.clear_request_log()
    sn_sim.inject(Fault("status", status=503, times=2, path="/table/incident"))
    guard = Guard(allowed=100)
    with request_guard(guard):
        assert sn.fetch(record["sys_id"]) is not None
    # three attempts and one journal read, two waits
    assert len(sent(sn_sim)) == 4 and guard.calls == 6


def test_a_guard_refusing_during_a_backoff_ends_the_retries_with_its_own_error(sn, sn_sim):
    record = sn_sim.human_create({"short_description": "Disk full"})
    sn_sim.clear_request_log()
    sn_sim.inject(Fault("status", status=503, path="/table/incident"))
    refusal = TransientRemoteError("outbox", "lease renewal failed: database is locked")
    guard = Guard(allowed=1, error=refusal)    # passes the first request, refuses the wait
    with request_guard(guard), pytest.raises(TransientRemoteError) as raised:
        sn.update(record["sys_id"], {"state": "2"})
    assert raised.value is refusal              # even a transient-looking refusal is not retried
    assert len(sent(sn_sim)) == 1


def test_nested_guards_all_run_outermost_first_and_end_with_their_block(sn, sn_sim):
    order: list[str] = []
    with request_guard(lambda: order.append("lease")):
        with request_guard(lambda: order.append("fencing token")):
            sn.check_auth()
        sn.check_auth()
    sn.check_auth()
    assert order == ["lease", "fencing token", "lease"]


# -- C. the remote's clock ------------------------------------------------------------------------

def test_the_remote_clock_offset_is_measured_from_date_headers(sn, sn_sim, clocks):
    assert sn.clock_offset == timedelta(0)                     # nothing measured yet
    made = sn_sim.human_create({"short_description": "VPN flaps"})
    sn.check_auth()
    assert abs(sn.clock_offset - HOURS_BEHIND) <= timedelta(seconds=1)
    record = sn.fetch(made["sys_id"])
    assert record.updated_at == SN_START                       # the remote's clock
    assert abs(sn.to_local_time(record.updated_at) - clocks.local.now()) <= timedelta(seconds=1)


def test_jira_times_convert_to_syncds_clock(jira, jira_sim, clocks):
    issue = jira_sim.human_create({"summary": "Queue backlog"})
    record = jira.fetch(issue["id"])
    assert abs(jira.clock_offset - HOURS_BEHIND) <= timedelta(seconds=1)
    assert abs(jira.to_local_time(record.updated_at) - clocks.local.now()) <= timedelta(seconds=1)


def test_one_slow_answer_does_not_swing_the_offset():
    offset = ClockOffset()
    local = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    for n in range(4):
        offset.observe("Thu, 01 Jan 2026 12:00:10 GMT", local)
    offset.observe("Thu, 01 Jan 2026 11:55:00 GMT", local)    # stamped long before it arrived
    offset.observe("not a date", local)                         # ignored
    offset.observe(None, local)
    # Date truncates to the second: each sample is the middle of its second.
    assert offset.offset == timedelta(seconds=10.5)


# -- B. own comments only -------------------------------------------------------------------------

def test_servicenow_finds_only_its_own_comment_never_a_persons_identical_ack(sn, sn_sim, clocks):
    sys_id = sn_sim.human_create({"short_description": "Checkout is down"})["sys_id"]
    sn_sim.human_add_journal(sys_id, "work_notes", "ack")          # a person's, before
    clocks.advance(2)
    since = clocks.local.now()
    ours = sn.add_comment(sys_id, "ack", channel="work_notes")
    clocks.advance(2)
    sn_sim.human_add_journal(sys_id, "work_notes", "ack")          # a person's, after

    found = sn.find_own_comment(sys_id, "ack", since=since, exclude=())
    assert found is not None and found.remote_id == ours.remote_id and found.own
    assert sn.find_own_comment(sys_id, "ack", since=since, exclude={ours.remote_id}) is None
    assert sn.find_own_comment(sys_id, "ack", since=since, exclude=(), channel="comments") is None
    assert sn.find_own_comment(sys_id, "ack", since=since + timedelta(minutes=1), exclude=()) is None
    clocks.advance(2)
    newer = sn.add_comment(sys_id, "ack\r\n", channel="work_notes")
    assert sn.find_own_comment(sys_id, "ack", since=since, exclude=()).remote_id == newer.remote_id
    assert sn.find_own_comment(sys_id, "ack", since=since,
                               exclude={newer.remote_id}).remote_id == ours.remote_id
    assert [c.own for c in sn.list_comments(sys_id)] == [False, True, False, True]


def test_jira_finds_only_its_own_comment_never_a_persons_identical_ack(jira, jira_sim, clocks):
    issue = jira_sim.human_create({"summary": "Checkout is down"})
    jira_sim.human_comment(issue["key"], "ack")
    clocks.advance(2)
    since = clocks.local.now()
    ours = jira.add_comment(issue["id"], "ack")
    clocks.advance(2)
    jira_sim.human_comment(issue["key"], "ack")

    found = jira.find_own_comment(issue["id"], "ack", since=since, exclude=())
    assert found is not None and found.remote_id == ours.remote_id and found.own
    assert jira.find_own_comment(issue["id"], "ack", since=since, exclude={ours.remote_id}) is None
    assert jira.find_own_comment(issue["id"], "ack", since=since, exclude=(),
                                 channel="comment:Developers") is None
    assert jira.find_own_comment(issue["id"], "ack", since=since + timedelta(minutes=1),
                                 exclude=()) is None
    assert [c.own for c in jira.fetch(issue["id"]).comments] == [False, True, False]


# -- D. what a quiet poll and a burst of creates cost ---------------------------------------------

def quiet_polls_cost(connector, sim, clocks, edit) -> float:
    """Requests per poll at a 1 s interval once five edits inside the overlap were read."""
    _, cursor = connector.fetch_changes(SyncCursor())
    for n in range(5):
        edit(n)
        clocks.advance(10)
    records, cursor = connector.fetch_changes(cursor)
    assert len(records) == 5
    sim.clear_request_log()
    for _ in range(30):
        clocks.advance(1)
        records, cursor = connector.fetch_changes(cursor)
        assert records == []
    return len(sent(sim)) / 30


def test_a_quiet_servicenow_poll_is_one_request_even_with_recent_edits_in_the_overlap(
        sn, sn_sim, clocks):
    cost = quiet_polls_cost(sn, sn_sim, clocks, lambda n: sn_sim.human_create(
        {"short_description": f"alert {n}", "work_notes": "seen by the poll already"}))
    assert cost == 1.0


def test_a_quiet_jira_poll_is_one_request_even_with_recent_edits_in_the_overlap(
        jira, jira_sim, clocks):
    cost = quiet_polls_cost(jira, jira_sim, clocks, lambda n: jira_sim.human_comment(
        jira_sim.human_create({"summary": f"alert {n}"})["key"], "seen by the poll already"))
    assert cost == 1.0


def test_a_burst_of_100_servicenow_creates_costs_one_post_each(sn, sn_sim):
    sn_sim.clear_request_log()
    for n in range(100):
        sn.create({"short_description": f"alert {n}"}, correlation_id=f"syncd-{n}")
    assert sent(sn_sim) == ["POST /api/now/table/incident"] * 100


def test_a_burst_of_100_jira_creates_costs_one_post_each_after_the_first(jira, jira_sim):
    jira_sim.clear_request_log()
    made = [jira.create({"summary": f"alert {n}", "status": "To Do"}, correlation_id=f"inc-{n}")
            for n in range(100)]
    log = sent(jira_sim)
    assert log.count("POST /rest/api/2/issue") == 100 and len(log) == 101   # one read: To Do
    assert all(r.fields["status"] == "To Do" for r in made)
    moved = jira.create({"summary": "being handled", "status": "In Progress"},
                        correlation_id="inc-moved")
    assert moved.fields["status"] == "In Progress"
    assert jira_sim.get_issue(moved.key)["fields"]["status"]["name"] == "In Progress"
