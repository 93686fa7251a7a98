"""An admin edits a mapping while the daemon runs: good edits take effect, broken ones change nothing."""

from __future__ import annotations

import os

import pytest

from syncd.mapping import MappingError, MappingSet
from syncd.mapping.loader import default_mapping_path
from syncd.metrics import REGISTRY


def reloads(outcome: str) -> float:
    return REGISTRY.get_sample_value("syncd_mapping_reloads_total", {"outcome": outcome}) or 0.0


_edits = iter(range(1, 10**6))


def edit(path, text: str) -> None:
    """Write the file and give it a fresh mtime (coarse file systems would otherwise hide it)."""
    path.write_text(text)
    stamp = os.stat(path).st_mtime_ns + next(_edits) * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def jira_file(tmp_path):
    path = tmp_path / "jira.yaml"
    path.write_text(default_mapping_path("jira").read_text())
    return path


@pytest.fixture
def mappings(jira_file):
    return MappingSet({"jira": jira_file, "servicenow": default_mapping_path("servicenow")})


def test_a_good_edit_is_applied_and_counted(mappings, jira_file):
    before = reloads("applied")
    edit(jira_file, jira_file.read_text().replace("Highest: P1", "Blocker: P1"))
    result = mappings.reload()
    assert result.applied == ["jira"] and result.rejected == {}
    assert reloads("applied") == before + 1
    assert mappings.get("jira").to_canonical({"priority": "Blocker"}) == {"priority": "P1"}


def test_a_broken_edit_keeps_the_old_mapping_and_reports_why(mappings, jira_file):
    active = mappings.get("jira")
    before = reloads("rejected")
    edit(jira_file, jira_file.read_text().replace("policy: newest_wins", "policy: newest_win"))
    result = mappings.reload()
    assert result.applied == []
    [problem] = result.rejected["jira"]
    assert (problem.file, problem.line) == (str(jira_file), 8)
    assert "conflict policy 'newest_win'" in problem.message
    assert reloads("rejected") == before + 1
    assert mappings.get("jira") is active


def test_a_broken_file_is_judged_once_not_on_every_tick(mappings, jira_file):
    edit(jira_file, "system: jira\nfields: [\n")
    assert "jira" in mappings.reload().rejected
    before = reloads("rejected")
    edit(jira_file, "system: jira\nfields: [\n")          # touched, same content
    assert mappings.reload().rejected == {}
    assert reloads("rejected") == before


def test_fixing_a_broken_edit_applies_the_fix(mappings, jira_file):
    good = jira_file.read_text()
    edit(jira_file, good.replace("Medium: P3", "Medium: P33"))
    assert "jira" in mappings.reload().rejected
    edit(jira_file, good.replace("Medium: P3", "Normal: P3"))
    assert mappings.reload().applied == ["jira"]
    assert mappings.get("jira").to_canonical({"priority": "Normal"}) == {"priority": "P3"}


def test_an_untouched_or_rewritten_identical_file_is_not_reloaded(mappings, jira_file):
    active = mappings.get("jira")
    assert mappings.reload().applied == []
    edit(jira_file, jira_file.read_text())
    assert mappings.reload().applied == []
    assert mappings.get("jira") is active


def test_a_deleted_file_keeps_the_old_mapping(mappings, jira_file):
    active = mappings.get("jira")
    jira_file.unlink()
    [problem] = mappings.reload().rejected["jira"]
    assert "cannot read the mapping file" in problem.message
    assert mappings.get("jira") is active


def test_an_invalid_mapping_at_startup_is_refused_with_every_problem(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("system: jira\npolicy: sometimes\nfields: []\nextra: 1\n")
    with pytest.raises(MappingError) as caught:
        MappingSet({"jira": broken})
    assert [(p.line, p.column) for p in caught.value.problems] == [(2, 9), (4, 1)]


def test_asking_for_an_unconfigured_connector_names_it(mappings):
    with pytest.raises(KeyError, match="no mapping for connector 'zendesk'"):
        mappings.get("zendesk")
