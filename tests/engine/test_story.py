"""A responder's day across ServiceNow and Jira, on SQLite and PostgreSQL: the sync stories of
issue 5, driven cycle by cycle against both simulators."""

from syncd.incidents import service as incident_service


def raise_sn_incident(world, **fields):
    record = world.sn.human_create({"short_description": "Checkout database down",
                                    "description": "p99 latency 30s", "impact": "1",
                                    "urgency": "1", **fields})
    return record["sys_id"]


def jira_issue(world):
    link = world.link("jira")
    assert link is not None, "no Jira issue linked"
    return world.jira.get_issue(link.remote_key)


def test_a_servicenow_p1_creates_one_jira_issue_with_the_mapped_fields(world):
    raise_sn_incident(world)
    world.settle()
    incident = world.incident()
    assert (incident.title, incident.priority, incident.status) == \
        ("Checkout database down", "P1", "triggered")
    issue = jira_issue(world)
    assert issue["fields"]["summary"] == f"[SYN-{incident.id}] Checkout database down"
    assert issue["fields"]["priority"]["name"] == "Highest"
    assert issue["fields"]["status"]["name"] == "To Do"
    assert world.jira.count_requests("POST", r"/issue$") == 1


def test_after_both_sides_go_quiet_syncd_writes_nothing_more(world):
    raise_sn_incident(world)
    world.settle()
    writes = (world.writes(world.sn), world.writes(world.jira))
    world.cycle(3)
    assert (world.writes(world.sn), world.writes(world.jira)) == writes


def test_a_jira_transition_to_done_resolves_servicenow_with_close_fields(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.jira.human_transition(world.link("jira").remote_key, "Done")
    world.settle()
    assert world.incident().status == "resolved"
    record = world.sn.get_incident(sys_id)
    assert record["state"] == "6"
    assert record["close_code"] and record["close_notes"]


def test_a_priority_change_on_either_side_reaches_the_other(world):
    sys_id = raise_sn_incident(world, impact="2", urgency="2")
    world.settle()
    assert jira_issue(world)["fields"]["priority"]["name"] == "Medium"
    world.sn.human_update(sys_id, {"impact": "1", "urgency": "1"})
    world.settle()
    assert world.incident().priority == "P1"
    assert jira_issue(world)["fields"]["priority"]["name"] == "Highest"
    world.jira.human_update(world.link("jira").remote_key, {"priority": {"name": "Low"}})
    world.settle()
    assert world.incident().priority == "P4"
    assert world.sn.get_incident(sys_id)["priority"] == "4"


def test_comments_and_work_notes_cross_both_ways_exactly_once(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.sn.human_add_journal(sys_id, "work_notes", "restarting the primary")
    world.jira.human_comment(world.link("jira").remote_key, "replica lag is 0 now")
    world.settle()
    world.cycle(2)
    jira_bodies = [c["body"] for c in world.jira.comments(world.link("jira").remote_key)]
    sn_notes = [e["value"] for e in world.sn.journal(sys_id)]
    assert jira_bodies.count("restarting the primary") == 1
    assert sn_notes.count("replica lag is 0 now") == 1
    with world.store.transaction() as session:
        bodies = [c.body for c in incident_service.comments(session=session, incident_id=1)]
    assert sorted(bodies) == ["replica lag is 0 now", "restarting the primary"]


def test_a_jira_comment_arrives_with_its_issue_and_costs_no_comment_list_read(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.jira.clear_request_log()
    world.jira.human_comment(world.link("jira").remote_key, "failover done")
    world.settle()
    assert "failover done" in [e["value"] for e in world.sn.journal(sys_id)]
    assert world.jira.count_requests("GET", r"/comment$") == 0


def test_our_own_servicenow_write_is_known_by_its_version_without_a_read_back(world):
    sys_id = raise_sn_incident(world)
    world.settle()
    world.engine.commands.update(1, {"priority": "P3"}, actor="carol", source="api")
    world.engine.deliver_all_due()
    assert world.link("servicenow").remote_version == world.sn.get_incident(sys_id)["sys_mod_count"]
    # A human edit between two of our writes breaks the chain: the version is left to the next read.
    world.sn.human_update(sys_id, {"short_description": "renamed by a human"})
    world.engine.commands.update(1, {"priority": "P4"}, actor="carol", source="api")
    world.engine.deliver_all_due()
    assert world.link("servicenow").remote_version is None
    world.settle()
    assert world.incident().title == "renamed by a human" and world.incident().priority == "P4"
