"""Both simulators tell time only by the injected clock: records, the HTTP Date header, the request
log and Retry-After dates, so tests on a ManualClock see one time base whatever the real date."""

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pytest
import requests

from syncd.clock import ManualClock
from syncd.connectors.http import parse_retry_after
from syncd.simulators.base import Fault
from syncd.simulators.jira import JiraSimulator, parse_jira_time
from syncd.simulators.servicenow import ServiceNowSimulator

START = datetime(2031, 7, 4, 9, 30, 15, tzinfo=timezone.utc)   # not near today, on purpose


@pytest.fixture
def clock():
    return ManualClock(START)


def _servicenow(clock):
    sim = ServiceNowSimulator(clock=clock)
    return sim, ("admin", "admin"), "/api/now/table/incident"


def _jira(clock):
    sim = JiraSimulator(deployment="Cloud", clock=clock)
    return sim, ("syncd@example.com", "syncd-api-token"), "/rest/api/2/myself"


@pytest.fixture(params=[_servicenow, _jira], ids=["servicenow", "jira"])
def served(request, clock):
    sim, auth, path = request.param(clock)
    sim.start()
    session = requests.Session()
    session.auth = auth
    yield sim, lambda: session.get(sim.base_url + path, timeout=10)
    session.close()
    sim.stop()


def test_the_date_header_and_the_request_log_follow_the_clock(served, clock):
    sim, get = served
    assert parsedate_to_datetime(get().headers["Date"]) == START
    clock.advance(3600.4)
    assert parsedate_to_datetime(get().headers["Date"]) == START.replace(hour=10, second=15)
    assert [r.at for r in sim.request_log()] == [START.timestamp(), START.timestamp() + 3600.4]


def test_a_retry_after_date_is_on_the_clock(served, clock):
    sim, get = served
    sim.inject(Fault("status", status=503, retry_after="30", retry_after_date=True, times=1))
    answer = get()
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "Fri, 04 Jul 2031 09:30:45 GMT"
    assert parse_retry_after(answer.headers["Retry-After"], now=clock.now()) == 30.0
    assert get().status_code == 200


def test_a_retry_after_date_needs_whole_seconds():
    with pytest.raises(ValueError, match="retry_after_date needs retry_after in whole seconds"):
        Fault("status", retry_after="Fri, 04 Jul 2031 09:30:45 GMT", retry_after_date=True)


def test_the_rate_limit_window_moves_with_the_clock(served, clock):
    """A client that waits its Retry-After on the same clock gets in, with no real waiting."""
    sim, get = served
    sim.limit_rate(2)
    assert [get().status_code for _ in range(3)] == [200, 200, 429]
    assert get().status_code == 429                # real time passing changes nothing
    clock.advance(1)
    assert get().status_code == 200


def test_records_carry_the_clock_time(clock):
    with ServiceNowSimulator(clock=clock) as sn, JiraSimulator(clock=clock) as jira:
        record = sn.human_create({"short_description": "clocked"})
        assert record["sys_created_on"] == record["sys_updated_on"] == "2031-07-04 09:30:15"
        clock.advance(60)
        sn.human_add_journal(record["sys_id"], "work_notes", "a minute later")
        assert sn.get_incident(record["sys_id"])["sys_updated_on"] == "2031-07-04 09:31:15"
        issue = jira.human_create({"summary": "clocked"})
        clock.advance(60)
        jira.human_update(issue["key"], {"priority": {"name": "High"}})
        fields = jira.get_issue(issue["key"])["fields"]
        assert parse_jira_time(fields["created"]) == START.replace(minute=31)
        assert parse_jira_time(fields["updated"]) == START.replace(minute=32)
