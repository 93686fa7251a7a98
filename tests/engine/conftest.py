"""A world for engine tests: both simulators over loopback HTTP, the real pysnow and jira clients
inside syncd's connectors, the default mappings, and an engine on the parametrized store.

Tests drive the engine one cycle at a time (`world.cycle()`), never by sleeping."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from syncd.connectors.http import RetryPolicy
from syncd.connectors.jira import JiraConnector
from syncd.connectors.servicenow import ServiceNowConnector
from syncd.engine import service as sync_service
from syncd.engine.connector_runtime import ConnectorRuntime
from syncd.engine.sync_engine import EngineSettings, SyncEngine
from syncd.incidents import service as incident_service
from syncd.mapping import default_mapping_path
from syncd.mapping.reload import MappingSet
from syncd.simulators.jira import JiraSimulator
from syncd.simulators.servicenow import ServiceNowSimulator
from syncd.store import queue

WRITES = r"^(POST|PUT|PATCH|DELETE)$"


@dataclass
class World:
    store: object
    clock: object
    sn: ServiceNowSimulator
    jira: JiraSimulator
    engine: SyncEngine
    mappings: MappingSet

    def cycle(self, times: int = 1) -> None:
        for _ in range(times):
            self.engine.run_cycle()

    def settle(self, limit: int = 6) -> None:
        """Cycle until a cycle changes nothing in either simulator (or fail after ``limit``)."""
        for _ in range(limit):
            before = (self.writes(self.sn), self.writes(self.jira), self.store_rows())
            self.cycle()
            if (self.writes(self.sn), self.writes(self.jira), self.store_rows()) == before:
                return
        raise AssertionError(f"no quiet state after {limit} cycles")

    @staticmethod
    def writes(sim) -> int:
        return sum(1 for r in sim.request_log() if r.method in ("POST", "PUT", "PATCH", "DELETE"))

    def store_rows(self):
        with self.store.transaction() as session:
            incidents = incident_service.list_incidents(session=session, limit=1000)
            return [(i.id, i.version) for i in incidents]

    def incident(self, incident_id: int = 1):
        with self.store.transaction() as session:
            return incident_service.get_incident(session=session, incident_id=incident_id)

    def link(self, connector: str, incident_id: int = 1):
        with self.store.transaction() as session:
            return sync_service.link_for(session=session, incident_id=incident_id, connector=connector)

    def only_issue(self):
        issues = self.jira.search_all() if hasattr(self.jira, "search_all") else None
        return issues


def make_engine(store, clock, sn, jira, mappings, *, sn_creates_incidents=True,
                jira_creates_tickets=True, jira_creates_incidents=False,
                sn_creates_tickets=False, policy=RetryPolicy(max_attempts=2, max_total_seconds=5)):
    sn_connector = ServiceNowConnector("servicenow", url=sn.base_url, username="admin",
                                       password="admin", policy=policy, clock=clock)
    jira_connector = JiraConnector("jira", url=jira.base_url, username="syncd",
                                   token="syncd-api-token", project="OPS", policy=policy,
                                   clock=clock)
    runtimes = {
        "servicenow": ConnectorRuntime("servicenow", sn_connector, lambda: mappings.get("servicenow"),
                                       create_incidents=sn_creates_incidents,
                                       create_tickets=sn_creates_tickets),
        "jira": ConnectorRuntime("jira", jira_connector, lambda: mappings.get("jira"),
                                 create_incidents=jira_creates_incidents,
                                 create_tickets=jira_creates_tickets),
    }
    return SyncEngine(sessions=store.sessions, runtimes=runtimes, clock=clock,
                  settings=EngineSettings(outbox_workers=2,
                                          backoff=queue.Backoff(initial=1, maximum=30,
                                                                  max_attempts=6),
                                          lease=timedelta(seconds=60)))


def people_take_a_second(sim):
    """Make each of the simulator's human edits move its clock on by a second first.

    On a clock that stands still a person's edit would carry the very timestamp of syncd's last
    write: Jira's `updated` is the issue's version, so it would read as no change at all, and
    `newest_wins` could not order the two. In life a person never acts in the same millisecond."""
    for name in [n for n in dir(type(sim)) if n.startswith("human_")]:
        edit = getattr(sim, name)

        def a_second_later(*args, _edit=edit, **kwargs):
            sim.clock.advance(1)
            return _edit(*args, **kwargs)
        setattr(sim, name, a_second_later)
    return sim


@pytest.fixture
def simulators(clock):
    """Both simulators on the engine's clock: one time base, so remote and store times compare
    and nothing depends on today's date."""
    sn = people_take_a_second(ServiceNowSimulator(clock=clock)).start()
    jira = people_take_a_second(JiraSimulator(deployment="Cloud", clock=clock)).start()
    yield sn, jira
    sn.stop()
    jira.stop()


@pytest.fixture
def mappings():
    return MappingSet({"servicenow": default_mapping_path("servicenow"),
                       "jira": default_mapping_path("jira")})


@pytest.fixture
def world(store, clock, simulators, mappings):
    sn, jira = simulators
    engine = make_engine(store, clock, sn, jira, mappings)
    yield World(store, clock, sn, jira, engine, mappings)
    for runtime in engine.runtimes.values():
        runtime.connector.close()
