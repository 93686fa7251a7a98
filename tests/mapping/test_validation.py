"""An admin's broken edits: every problem is reported with file:line:column, what and a hint."""

from __future__ import annotations

import textwrap

import pytest

from syncd.mapping import MappingError, Problem, load_mapping, validate_files
from syncd.mapping.loader import default_mapping_path

SN_PRIORITY = """
  - canonical: priority
    remote: priority
    write_as: [impact, urgency]
    value_map: {"1": P1, "2": P2, "3": P3, "4": P4, "5": P5}
    outbound_map:
      P1: {impact: "1", urgency: "1"}
      P2: {impact: "1", urgency: "2"}
      P3: {impact: "2", urgency: "2"}
      P4: {impact: "2", urgency: "3"}
      P5: {impact: "3", urgency: "3"}
"""

CASES = {
    "yaml_syntax": ("""
        system: servicenow
        fields:
          - canonical: title
           remote: short_description
        """, "4:4: YAML syntax error: while parsing a block collection; expected <block end>, "
             "but found '<block mapping start>' "
             "(hint: check indentation, colons and quotes around this point)"),
    "unknown_canonical_field": ("""
        system: servicenow
        fields:
          - canonical: titel
            remote: short_description
        """, "3:16: unknown canonical field 'titel' (hint: did you mean 'title'?)"),
    "unknown_key_in_rule": ("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
            direciton: in
        """, "5:5: unknown key 'direciton' in a field rule (hint: did you mean 'direction'?)"),
    "unknown_top_level_key": ("""
        system: servicenow
        fields: []
        polcy: store_wins
        """, "3:1: unknown key 'polcy' in the mapping file (hint: did you mean 'policy'?)"),
    "status_gap_outbound": ("""
        system: servicenow
        fields:
          - canonical: status
            remote: state
            value_map:
              "1": triggered
              "2": acknowledged
        """, "6:7: the rule for status cannot write resolved to state "
             "(hint: map every status value outbound (triggered, acknowledged, resolved))"),
    "priority_gap_outbound": ("""
        system: jira
        fields:
          - canonical: priority
            remote: priority
            value_map: {Highest: P1, High: P2, Medium: P3, Low: P4}
        """, "5:16: the rule for priority cannot write P5 to priority "
             "(hint: map every priority value outbound (P1, P2, P3, P4, P5))"),
    "priority_gap_in_outbound_map": ("""
        system: jira
        fields:
          - canonical: priority
            remote: priority
            value_map: {Highest: P1, High: P2, Medium: P3, Low: P4, Lowest: P5, Trivial: P5}
            outbound_map: {P1: Highest, P2: High, P3: Medium, P5: Lowest}
        """, "6:19: the rule for priority cannot write P4 to priority "
             "(hint: map every priority value outbound (P1, P2, P3, P4, P5))"),
    "ambiguous_value_map": ("""
        system: servicenow
        fields:
          - canonical: status
            remote: state
            value_map: {"1": triggered, "2": acknowledged, "3": acknowledged, "6": resolved}
        """, "5:16: the rule for status: several remote values mean 'acknowledged' ('2', '3'), so "
             "writing it is ambiguous (hint: add an outbound_map saying which one to write, or set "
             "direction: in)"),
    "invalid_canonical_value": ("""
        system: servicenow
        fields:
          - canonical: status
            remote: state
            direction: in
            value_map: {"1": triggerd}
        """, "6:22: the value_map of status: 'triggerd' is not a valid status (hint: did you mean 'triggered'?)"),
    "unknown_policy": ("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
            policy: remote-wins
        """, "5:13: conflict policy 'remote-wins' is not one of store_wins, remote_wins, newest_wins "
             "(hint: did you mean 'remote_wins'?)"),
    "bad_direction": ("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
            direction: inbound
        """, "5:16: direction 'inbound' is not one of in, out, both"),
    "unknown_placeholder": ("""
        system: jira
        fields:
          - canonical: title
            remote: summary
            template: "[{numbr}] {title}"
        """, "5:15: the template of title names an unknown placeholder {numbr} (hint: did you mean 'number'?)"),
    "template_not_invertible": ("""
        system: jira
        fields:
          - canonical: title
            remote: summary
            template: "[{number}]"
        """, "5:15: the template of title must contain {title} exactly once (found 0) to be read back "
             "(hint: or set direction: out so that it is only written)"),
    "template_brace": ("""
        system: jira
        fields:
          - canonical: title
            remote: summary
            direction: out
            template: "{title"
        """, "6:15: the template of title: unbalanced '{' at offset 0 (write {{ for a literal brace)"),
    "reference_without_match": ("""
        system: servicenow
        fields:
          - canonical: assignee
            remote: assigned_to
            reference: {}
        """, "5:16: the reference of assignee has no 'match' attribute "
             "(hint: say which attribute identifies the record, e.g. match: user_name)"),
    "reference_match_of_other_system": ("""
        system: jira
        fields:
          - canonical: assignee
            remote: assignee
            reference: {match: user_name}
        """, "5:24: the jira reference match 'user_name' is not one of accountId, name, emailAddress "
             "(hint: did you mean 'name'?)"),
    "duplicate_rule": ("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
          - canonical: title
            remote: description
        """, "5:5: duplicate rule for canonical field 'title' "
             "(hint: it is already mapped on line 3; keep one rule per field)"),
    "duplicate_yaml_key": ("""
        system: servicenow
        fields:
          - canonical: title
            remote: short_description
            remote: description
        """, "5:5: duplicate key 'remote' in a field rule (hint: it is already set on line 4; keep one)"),
    "remote_field_written_twice": ("""
        system: servicenow
        fields:""" + SN_PRIORITY.rstrip().replace("\n  ", "\n          ") + """
          - canonical: urgency
            remote: urgency
            value_map: {"1": high, "3": low}
        """, "13:5: remote field 'urgency' is written by both the priority rule and the urgency rule "
             "(hint: keep one writer; make the other direction: in)"),
    "composite_entry_missing_a_field": ("""
        system: servicenow
        fields:
          - canonical: priority
            remote: priority
            write_as: [impact, urgency]
            value_map: {"1": P1, "2": P2, "3": P3, "4": P4, "5": P5}
            outbound_map: {P1: {impact: "1"}, P2: {impact: "1", urgency: "2"},
                           P3: {impact: "2", urgency: "2"}, P4: {impact: "2", urgency: "3"},
                           P5: {impact: "3", urgency: "3"}}
        """, "7:24: the outbound_map entry P1 must set exactly impact, urgency (the write_as fields)"),
    "outbound_map_on_inbound_rule": ("""
        system: servicenow
        fields:
          - canonical: urgency
            remote: urgency
            direction: in
            value_map: {"1": high, "3": low}
            outbound_map: {high: "1", low: "3"}
        """, "7:5: the rule for urgency has an outbound_map but direction is in "
             "(hint: remove it, or set direction: both)"),
    "on_resolve_reads_unknown_field": ("""
        system: servicenow
        fields:
          - canonical: status
            remote: state
            value_map: {"1": triggered, "2": acknowledged, "6": resolved}
            on_resolve:
              close_notes: {from: resolutoin}
        """, "7:27: on_resolve close_notes reads unknown canonical field 'resolutoin' "
             "(hint: did you mean 'resolution'?)"),
    "unknown_comment_channel": ("""
        system: servicenow
        fields: []
        comments:
          inbound:
            worknotes: internal
        """, "5:5: unknown comment channel 'worknotes' for servicenow (hint: did you mean 'work_notes'?)"),
    "unknown_comment_visibility": ("""
        system: servicenow
        fields: []
        comments:
          outbound:
            private: work_notes
        """, "5:5: unknown comment visibility 'private' (hint: one of internal, public)"),
    "restricted_servicenow_channel": ("""
        system: servicenow
        fields: []
        comments:
          outbound:
            internal: work_notes:itil
        """, "5:15: comment channel 'work_notes:itil' cannot be restricted that way (hint: on Jira write "
             "comment:<role> or comment:group:<group>; ServiceNow channels take no suffix)"),
    "empty_file": ("", "1:1: the mapping file is empty (hint: start from syncd/mapping/defaults/*.yaml)"),
    "missing_system": ("""
        fields: []
        """, "1:1: the mapping file lacks 'system' (hint: system: servicenow or jira)"),
}


def write(tmp_path, text: str, name: str = "mapping.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.mark.parametrize("case", CASES)
def test_each_problem_is_reported_at_its_line_and_column(tmp_path, case):
    text, expected = CASES[case]
    path = write(tmp_path, text)
    assert [str(p) for p in validate_files([path])] == [f"{path}:{expected}"]


def test_all_problems_of_a_file_come_back_at_once(tmp_path):
    path = write(tmp_path, """
        system: servicenow
        policy: last_wins
        fields:
          - canonical: titel
            remote: short_description
          - canonical: description
            remote: description
            direction: sideways
        """)
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert [(p.line, p.column) for p in caught.value.problems] == [(2, 9), (4, 16), (8, 16)]
    assert str(path) in str(caught.value)


def test_problems_of_several_files_are_listed_in_file_order(tmp_path):
    good = default_mapping_path("jira")
    broken_a = write(tmp_path, "system: jira\nfields: {}\n", "a.yaml")
    broken_b = write(tmp_path, "system: zendesk\nfields: []\n", "b.yaml")
    problems = validate_files([broken_a, good, broken_b])
    assert [p.file for p in problems] == [str(broken_a), str(broken_b)]
    assert problems[1].message == "system 'zendesk' is not one of servicenow, jira"


def test_a_missing_file_is_a_problem_not_a_crash(tmp_path):
    missing = tmp_path / "nope.yaml"
    [problem] = validate_files([missing])
    assert (problem.file, problem.line, problem.column) == (str(missing), 1, 1)
    assert "cannot read the mapping file" in problem.message


def test_a_problem_without_a_hint_renders_without_one():
    assert str(Problem("m.yaml", 3, 7, "bad")) == "m.yaml:3:7: bad"
    assert str(Problem("m.yaml", 3, 7, "bad", "fix it")) == "m.yaml:3:7: bad (hint: fix it)"


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_the_shipped_defaults_validate_clean(system):
    assert validate_files([default_mapping_path(system)]) == []


@pytest.mark.parametrize("system", ["servicenow", "jira"])
def test_the_mappings_folder_links_to_the_shipped_defaults(system):
    from pathlib import Path
    linked = Path(__file__).parents[2] / "mappings" / f"{system}.yaml"
    assert linked.resolve() == default_mapping_path(system).resolve()


def test_merge_keys_share_settings_between_rules_as_in_the_config_file(tmp_path):
    """Mapping files are read by the same YAML reader as the config, so `<<: *anchor` works."""
    path = write(tmp_path, """
        system: jira
        fields:
          - &inbound {canonical: title, remote: summary, direction: in, policy: remote_wins}
          - {<<: *inbound, canonical: description, remote: description}
        """)
    mapping = load_mapping(path)
    assert [(rule.canonical, rule.direction, rule.policy) for rule in mapping.fields] == [
        ("title", "in", "remote_wins"), ("description", "in", "remote_wins")]
