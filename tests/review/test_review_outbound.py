"""Review of issue 9's outbound changes: retried and late deliveries that still duplicate."""

from __future__ import annotations

import shutil

import pytest

from syncd.mapping import default_mapping_path
from syncd.mapping.reload import MappingSet

from tests.engine.conftest import make_engine
from tests.engine.test_outbound_defects import Crash, open_rows
from tests.engine.test_story import raise_sn_incident


@pytest.fixture
def mappings(tmp_path):
    """The default mappings, except that internal notes stay out of Jira (a common choice:
    Jira readers see public comments only)."""
    shutil.copy(default_mapping_path("servicenow"), tmp_path / "servicenow.yaml")
    jira = default_mapping_path("jira").read_text()
    assert "    internal: comment " in jira
    (tmp_path / "jira.yaml").write_text(jira.replace("    internal: comment ",
                                                     "    internal: null ", 1))
    return MappingSet({"servicenow": tmp_path / "servicenow.yaml",
                       "jira": tmp_path / "jira.yaml"})


def test_a_crashed_note_is_not_posted_twice_when_an_unexported_note_says_the_same(world,
                                                                                   mappings):
    raise_sn_incident(world)
    world.settle()
    key = world.link("jira").remote_key
    # An internal note: to ServiceNow's work notes, never to Jira (so never linked there).
    world.engine.commands.add_note(1, "investigating", author="carol", source="api")
    world.settle()
    assert world.jira.comments(key) == []

    def crash(item):
        if item.operation == "comment" and item.connector == "jira":
            raise Crash()

    world.engine.outbox.after_remote_write = crash
    world.clock.advance(5)      # Jira's version is its `updated` time: the comment must move it
    world.engine.commands.add_note(1, "investigating", author="dave", source="api",
                                   visibility="public")
    with pytest.raises(Crash):
        world.engine.deliver_all_due()       # posted to Jira; the process dies before its commit
    world.engine = make_engine(world.store, world.clock, world.sn, world.jira, mappings)
    world.clock.advance(120)
    world.settle()
    assert open_rows(world) == []
    assert [c["body"] for c in world.jira.comments(key)] == ["investigating"]

