"""Reading and validating mapping files (YAML) into :class:`~syncd.mapping.model.Mapping`.

The file is read by :mod:`syncd.yamlsource` as nodes, not plain dicts, so every problem can point
at its line and column, and duplicate keys (which PyYAML would silently overwrite) are caught.
Validation collects every problem before giving up, so an admin fixes a file in one pass.
The file format is documented key by key in docs/mappings.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable

import yaml

from syncd.mapping.model import (
    CANONICAL_FIELDS, CONTEXT_NAMES, CUSTOM_PREFIX, DIRECTIONS, POLICIES, VISIBILITIES, CommentRules,
    FieldMapping, Mapping, MappingError, Problem, ResolveWrite, canonical_field, value_key,
)
from syncd.mapping.templates import Template, TemplateSyntaxError
from syncd.yamlsource import YamlSyntaxError, compose, did_you_mean, mapping_items, scalar

DEFAULTS_DIR = Path(__file__).parent / "defaults"

# What each remote system offers: reference attributes a `match` may name, comment channels.
SYSTEMS: dict[str, dict[str, tuple[str, ...]]] = {
    "servicenow": {"match": ("user_name", "email", "name", "sys_id"), "channels": ("work_notes", "comments")},
    "jira": {"match": ("accountId", "name", "emailAddress"), "channels": ("comment",)},
}

TOP_KEYS = ("system", "policy", "fields", "comments", "on_create")
FIELD_KEYS = ("canonical", "remote", "direction", "policy", "value_map", "outbound_map", "fallback",
              "write_as", "reference", "template", "default", "on_resolve")
COMMENT_KEYS = ("inbound", "outbound")
INBOUND_COMMENT_KEYS = ("plain", "restricted")
RESOLVE_KEYS = ("from", "default")
REFERENCE_KEYS = ("match",)


def default_mapping_path(system: str) -> Path:
    """The mapping shipped with syncd for a system (``servicenow`` or ``jira``)."""
    return DEFAULTS_DIR / f"{system}.yaml"


def load_mapping(path: str | Path) -> Mapping:
    """Read and validate one mapping file; raise MappingError listing every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MappingError([Problem(str(path), 1, 1, f"cannot read the mapping file: {exc.strerror}",
                                    "check the `mapping:` path in the connector's config")]) from exc
    return parse_mapping(data, source=str(path))


def parse_mapping(data: bytes | str, *, source: str) -> Mapping:
    """Validate mapping text; ``source`` names it in problems. Raise MappingError if invalid."""
    raw = data.encode() if isinstance(data, str) else data
    reader = _Reader(source)
    mapping = reader.read(raw)
    if reader.problems:
        raise MappingError(sorted(reader.problems, key=lambda p: (p.line, p.column)))
    assert mapping is not None
    return mapping


def validate_files(paths: Iterable[str | Path]) -> list[Problem]:
    """Every problem in the given mapping files, in file order (empty: all valid)."""
    problems: list[Problem] = []
    for path in paths:
        try:
            load_mapping(path)
        except MappingError as exc:
            problems.extend(exc.problems)
    return problems


def _one_of(choices: Iterable[str]) -> str:
    return "one of " + ", ".join(choices)


class _Reader:
    """Walks the composed YAML nodes of one file, building the model and collecting problems."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.system: str | None = None

    # -- primitives ------------------------------------------------------------------------------
    def problem(self, node: yaml.Node | None, message: str, hint: str = "") -> None:
        mark = node.start_mark if node is not None else None
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        self.problems.append(Problem(self.source, line, column, message, hint))

    def value(self, node: yaml.Node) -> Any:
        return scalar(node)

    def pairs(self, node: yaml.Node, where: str, allowed: tuple[str, ...] | None = None
              ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """A YAML mapping's entries by key text; reports a non-mapping, duplicate and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{where} must be a mapping (key: value lines)")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for item in mapping_items(node):
            key, key_node, value_node = item.key, item.key_node, item.value_node
            if key is None:
                self.problem(key_node, f"{where} has a key that is not plain text")
                continue
            if item.first_line is not None:
                self.problem(key_node, f"duplicate key {key!r} in {where}",
                             f"it is already set on line {item.first_line}; keep one")
                continue
            if allowed is not None and key not in allowed:
                hint = did_you_mean(key, allowed) or f"known keys: {', '.join(allowed)}"
                self.problem(key_node, f"unknown key {key!r} in {where}", hint)
                continue
            entries[key] = (key_node, value_node)
        return entries

    def text(self, node: yaml.Node, what: str) -> str | None:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, str) or not value:
            self.problem(node, f"{what} must be non-empty text")
            return None
        return value

    def choice(self, node: yaml.Node, what: str, choices: tuple[str, ...]) -> str | None:
        value = self.text(node, what)
        if value is not None and value not in choices:
            self.problem(node, f"{what} {value!r} is not {_one_of(choices)}", did_you_mean(value, choices))
            return None
        return value

    def template(self, node: yaml.Node, what: str, allowed_names: Iterable[str] = ()) -> Template | None:
        text = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(text, str):
            self.problem(node, f"{what} must be text")
            return None
        try:
            template = Template.parse(text)
        except TemplateSyntaxError as exc:
            self.problem(node, f"{what}: {exc}")
            return None
        known = set(CONTEXT_NAMES) | set(CANONICAL_FIELDS) | set(allowed_names)
        for name in template.placeholders:
            if name not in known and not (name.startswith(CUSTOM_PREFIX) and canonical_field(name)):
                self.problem(node, f"{what} names an unknown placeholder {{{name}}}",
                             did_you_mean(name, sorted(known)) or
                             f"use {', '.join(CONTEXT_NAMES)} or a canonical field name")
        return template

    # -- the file --------------------------------------------------------------------------------
    def read(self, raw: bytes) -> Mapping | None:
        try:
            root = compose(raw, source=self.source)
        except YamlSyntaxError as exc:
            where = exc.problem
            self.problems.append(Problem(self.source, where.line or 1, where.column or 1,
                                         where.message,
                                         "check indentation, colons and quotes around this point"))
            return None
        if root is None:
            self.problems.append(Problem(self.source, 1, 1, "the mapping file is empty",
                                         "start from syncd/mapping/defaults/*.yaml"))
            return None
        top = self.pairs(root, "the mapping file", TOP_KEYS)
        if top is None:
            return None
        for required in ("system", "fields"):
            if required not in top:
                self.problem(root, f"the mapping file lacks {required!r}",
                             "system: servicenow or jira" if required == "system" else
                             "fields: a list of field rules")
        if "system" in top:
            self.system = self.choice(top["system"][1], "system", tuple(SYSTEMS))
        policy = "newest_wins"
        if "policy" in top:
            policy = self.choice(top["policy"][1], "conflict policy", POLICIES) or policy
        fields = self.fields(top["fields"][1], policy) if "fields" in top else []
        comments = self.comments(top["comments"][1] if "comments" in top else None)
        on_create = self.on_create(top["on_create"][1]) if "on_create" in top else {}
        self.check_writes_once(fields, on_create)
        if self.problems:
            return None
        return Mapping(source=self.source, system=self.system or "", default_policy=policy,
                       fields=tuple(rule for rule, _ in fields), comments=comments,
                       on_create=MappingProxyType(on_create),
                       digest=hashlib.sha256(raw).hexdigest())

    def fields(self, node: yaml.Node, default_policy: str) -> list[tuple[FieldMapping, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "fields must be a list of field rules (lines starting with '- ')")
            return []
        rules: list[tuple[FieldMapping, yaml.Node]] = []
        seen: dict[str, yaml.Node] = {}
        for item in node.value:
            rule = self.field(item, default_policy)
            if rule is None:
                continue
            if rule.canonical in seen:
                first = seen[rule.canonical].start_mark.line + 1
                self.problem(item, f"duplicate rule for canonical field {rule.canonical!r}",
                             f"it is already mapped on line {first}; keep one rule per field")
                continue
            seen[rule.canonical] = item
            rules.append((rule, item))
        return rules

    def field(self, node: yaml.Node, default_policy: str) -> FieldMapping | None:
        entries = self.pairs(node, "a field rule", FIELD_KEYS)
        if entries is None:
            return None
        missing = [key for key in ("canonical", "remote") if key not in entries]
        for key in missing:
            self.problem(node, f"a field rule lacks {key!r}",
                         "each rule maps one canonical field to one remote field")
        if missing:
            return None
        canonical_node = entries["canonical"][1]
        canonical = self.text(canonical_node, "canonical")
        spec = canonical_field(canonical) if canonical else None
        if canonical and spec is None:
            self.problem(canonical_node, f"unknown canonical field {canonical!r}",
                         did_you_mean(canonical, CANONICAL_FIELDS) or
                         f"use {', '.join(CANONICAL_FIELDS)} or custom.<name>")
        remote = self.text(entries["remote"][1], "remote")
        direction, policy = "both", default_policy
        if "direction" in entries:
            direction = self.choice(entries["direction"][1], "direction", DIRECTIONS) or direction
        if "policy" in entries:
            policy = self.choice(entries["policy"][1], "conflict policy", POLICIES) or policy
        if spec is None or remote is None:
            return None
        where = f"the rule for {canonical}"
        reads, writes = direction in ("in", "both"), direction in ("out", "both")

        reference = None
        if "reference" in entries:
            reference = self.reference(entries["reference"][1], canonical)
        template = None
        if "template" in entries:
            template = self.template(entries["template"][1], f"the template of {canonical}")
            if template is not None and not spec.text:
                self.problem(entries["template"][0], f"{canonical} holds any JSON value; a template makes text",
                             "map the custom field without a template")
            elif template is not None and reads:
                self.check_invertible(entries["template"][1], template, canonical)
        write_as: tuple[str, ...] = ()
        if "write_as" in entries:
            write_as = self.write_as(entries["write_as"][1])
        value_map = outbound_map = None
        if "value_map" in entries:
            value_map = self.value_map(entries["value_map"][1], spec, where)
        if "outbound_map" in entries:
            outbound_map = self.outbound_map(entries["outbound_map"][1], spec, where, write_as)
            if not writes:
                self.problem(entries["outbound_map"][0], f"{where} has an outbound_map but direction is in",
                             "remove it, or set direction: both")
        if writes and value_map is not None and outbound_map is None:
            outbound_map = self.invert(entries["value_map"][1], value_map, where, write_as)
        if writes and outbound_map is not None and spec.choices is not None:
            node_for_gap = entries["outbound_map"][1] if "outbound_map" in entries else entries["value_map"][1]
            gaps = [c for c in spec.choices if value_key(c) not in outbound_map]
            if gaps:
                self.problem(node_for_gap, f"{where} cannot write {', '.join(gaps)} to {remote}",
                             f"map every {canonical} value outbound ({', '.join(spec.choices)})")
        if write_as and outbound_map is None and "outbound_map" not in entries:
            self.problem(entries["write_as"][1], f"{where} has write_as but no outbound_map",
                         "give each canonical value the remote values to write, e.g. P1: {impact: '1', urgency: '1'}")
        for key_a, key_b in (("reference", "value_map"), ("reference", "template"), ("template", "value_map"),
                             ("reference", "write_as"), ("template", "write_as")):
            if key_a in entries and key_b in entries:
                self.problem(entries[key_b][0], f"{where} cannot combine {key_a} and {key_b}")

        fallback, has_fallback = None, "fallback" in entries
        if has_fallback:
            fallback = self.canonical_value(entries["fallback"][1], spec, f"the fallback of {canonical}")
            if value_map is None:
                self.problem(entries["fallback"][0], f"{where} has a fallback but no value_map")
        default, has_default = None, "default" in entries
        if has_default:
            default = self.canonical_value(entries["default"][1], spec, f"the default of {canonical}")
        on_resolve: tuple[ResolveWrite, ...] = ()
        if "on_resolve" in entries:
            if canonical != "status":
                self.problem(entries["on_resolve"][0], f"on_resolve belongs to the status rule, not {canonical}")
            else:
                on_resolve = self.on_resolve(entries["on_resolve"][1])
        return FieldMapping(
            canonical=canonical, remote=remote, direction=direction, policy=policy,
            value_map=None if value_map is None else MappingProxyType(value_map),
            outbound_map=None if outbound_map is None else MappingProxyType(outbound_map),
            fallback=fallback, has_fallback=has_fallback, write_as=write_as, reference=reference,
            template=template, default=default, has_default=has_default, on_resolve=on_resolve)

    # -- parts of a field rule -----------------------------------------------------------------
    def reference(self, node: yaml.Node, canonical: str) -> str | None:
        entries = self.pairs(node, f"the reference of {canonical}", REFERENCE_KEYS)
        if entries is None:
            return None
        if "match" not in entries:
            self.problem(node, f"the reference of {canonical} has no 'match' attribute",
                         "say which attribute identifies the record, e.g. match: user_name")
            return None
        choices = SYSTEMS[self.system]["match"] if self.system else tuple(
            sorted({m for s in SYSTEMS.values() for m in s["match"]}))
        what = f"the {self.system} reference match" if self.system else "the reference match"
        return self.choice(entries["match"][1], what, choices)

    def check_invertible(self, node: yaml.Node, template: Template, canonical: str) -> None:
        count = template.placeholders.count(canonical)
        if count != 1:
            self.problem(node, f"the template of {canonical} must contain {{{canonical}}} exactly once "
                               f"(found {count}) to be read back",
                         "or set direction: out so that it is only written")

    def write_as(self, node: yaml.Node) -> tuple[str, ...]:
        items = node.value if isinstance(node, yaml.SequenceNode) else None
        names = [self.text(item, "a write_as field") for item in items or ()]
        if not items or len(items) < 2:
            self.problem(node, "write_as must list two or more remote fields",
                         "e.g. write_as: [impact, urgency]")
            return ()
        if len(set(names)) != len(names):
            self.problem(node, "write_as lists a remote field twice")
        return tuple(n for n in names if n)

    def canonical_value(self, node: yaml.Node, spec, what: str) -> Any:
        value = self.value(node)
        if spec.choices is not None and value not in spec.choices and not (value is None and spec.nullable):
            hint = did_you_mean(str(value), spec.choices) or _one_of(spec.choices)
            self.problem(node, f"{what}: {value!r} is not a valid {spec.name}", hint)
        return value

    def value_map(self, node: yaml.Node, spec, where: str) -> dict[Any, Any] | None:
        entries = self.pairs(node, f"the value_map of {spec.name}")
        if entries is None:
            return None
        result: dict[Any, Any] = {}
        for key, (key_node, value_node) in entries.items():
            remote_key = value_key(self.value(key_node))
            result[remote_key] = self.canonical_value(value_node, spec, f"the value_map of {spec.name}")
        if not result:
            self.problem(node, f"the value_map of {spec.name} is empty")
        return result

    def invert(self, node: yaml.Node, value_map: dict[Any, Any], where: str,
               write_as: tuple[str, ...]) -> dict[Any, Any] | None:
        """The outbound map implied by a one-to-one value_map."""
        if write_as:
            return None
        inverse: dict[Any, Any] = {}
        ambiguous: dict[Any, list[Any]] = {}
        for remote, canonical in value_map.items():
            key = value_key(canonical)
            if key in inverse:
                ambiguous.setdefault(key, [inverse[key]]).append(remote)
            inverse[key] = remote
        for canonical, remotes in ambiguous.items():
            self.problem(node, f"{where}: several remote values mean {canonical!r} "
                               f"({', '.join(map(repr, remotes))}), so writing it is ambiguous",
                         "add an outbound_map saying which one to write, or set direction: in")
        return None if ambiguous else inverse

    def outbound_map(self, node: yaml.Node, spec, where: str, write_as: tuple[str, ...]) -> dict[Any, Any] | None:
        entries = self.pairs(node, f"the outbound_map of {spec.name}")
        if entries is None:
            return None
        result: dict[Any, Any] = {}
        for key, (key_node, value_node) in entries.items():
            canonical = self.canonical_value(key_node, spec, f"the outbound_map of {spec.name}")
            if write_as:
                pairs = self.pairs(value_node, f"the outbound_map entry {key}")
                if pairs is None:
                    continue
                if set(pairs) != set(write_as):
                    self.problem(value_node, f"the outbound_map entry {key} must set exactly "
                                             f"{', '.join(write_as)} (the write_as fields)")
                result[value_key(canonical)] = MappingProxyType(
                    {name: self.value(v) for name, (_, v) in pairs.items()})
            else:
                result[value_key(canonical)] = self.value(value_node)
        return result

    def on_resolve(self, node: yaml.Node) -> tuple[ResolveWrite, ...]:
        entries = self.pairs(node, "on_resolve")
        if entries is None:
            return ()
        writes: list[ResolveWrite] = []
        for remote, (_, value_node) in entries.items():
            if isinstance(value_node, yaml.MappingNode):
                parts = self.pairs(value_node, f"on_resolve {remote}", RESOLVE_KEYS) or {}
                source = None
                if "from" in parts:
                    source = self.text(parts["from"][1], f"on_resolve {remote} from")
                    if source and canonical_field(source) is None:
                        self.problem(parts["from"][1], f"on_resolve {remote} reads unknown canonical field {source!r}",
                                     did_you_mean(source, CANONICAL_FIELDS))
                default = self.template(parts["default"][1], f"on_resolve {remote} default") \
                    if "default" in parts else None
                if not parts:
                    self.problem(value_node, f"on_resolve {remote} needs 'from' or 'default'")
                writes.append(ResolveWrite(remote, source, default))
            else:
                writes.append(ResolveWrite(remote, None, self.template(value_node, f"on_resolve {remote}")))
        return tuple(writes)

    def on_create(self, node: yaml.Node) -> dict[str, Template]:
        entries = self.pairs(node, "on_create") or {}
        templates = {remote: self.template(value_node, f"on_create {remote}")
                     for remote, (_, value_node) in entries.items()}
        return {remote: t for remote, t in templates.items() if t is not None}

    def check_writes_once(self, fields: list[tuple[FieldMapping, yaml.Node]],
                          on_create: dict[str, Template]) -> None:
        """Two rules writing one remote field would race; refuse it."""
        writers: dict[str, str] = {remote: "on_create" for remote in on_create}
        for rule, node in fields:
            written = list(rule.remote_written) if rule.writes else []
            written += [write.remote for write in rule.on_resolve]
            for remote in written:
                if remote in writers and writers[remote] != f"the {rule.canonical} rule":
                    self.problem(node, f"remote field {remote!r} is written by both {writers[remote]} "
                                       f"and the {rule.canonical} rule",
                                 "keep one writer; make the other direction: in")
                writers.setdefault(remote, f"the {rule.canonical} rule")

    # -- comments --------------------------------------------------------------------------------
    def comments(self, node: yaml.Node | None) -> CommentRules:
        inbound: dict[tuple[str, bool], str | None] = {}
        outbound: dict[str, tuple[str, bool] | None] = {}
        entries = self.pairs(node, "comments", COMMENT_KEYS) if node is not None else {}
        channels = SYSTEMS[self.system]["channels"] if self.system else None
        if entries and "inbound" in entries:
            for channel, (key_node, value_node) in (self.pairs(entries["inbound"][1], "comments inbound") or {}).items():
                self.check_channel(key_node, channel, channels)
                if isinstance(value_node, yaml.MappingNode):
                    parts = self.pairs(value_node, f"comments inbound {channel}", INBOUND_COMMENT_KEYS) or {}
                    for restricted, key in ((False, "plain"), (True, "restricted")):
                        inbound[(channel, restricted)] = self.visibility(parts[key][1]) if key in parts else None
                else:
                    visibility = self.visibility(value_node)
                    inbound[(channel, False)] = inbound[(channel, True)] = visibility
        if entries and "outbound" in entries:
            for visibility, (key_node, value_node) in (self.pairs(entries["outbound"][1], "comments outbound") or {}).items():
                if visibility not in VISIBILITIES:
                    self.problem(key_node, f"unknown comment visibility {visibility!r}", _one_of(VISIBILITIES))
                outbound[visibility] = self.comment_target(value_node, channels)
        return CommentRules(MappingProxyType(inbound), MappingProxyType(outbound))

    def check_channel(self, node: yaml.Node, channel: str, channels: tuple[str, ...] | None) -> None:
        if channels is not None and channel not in channels:
            self.problem(node, f"unknown comment channel {channel!r} for {self.system}",
                         did_you_mean(channel, channels) or _one_of(channels))

    def visibility(self, node: yaml.Node) -> str | None:
        if self.value(node) is None:
            return None                  # null: do not import
        return self.choice(node, "comment visibility", VISIBILITIES)

    def comment_target(self, node: yaml.Node, channels: tuple[str, ...] | None) -> tuple[str, bool] | None:
        """A channel name; on Jira ``comment:<role>`` or ``comment:group:<group>`` restricts it."""
        if self.value(node) is None:
            return None                  # null: do not export
        channel = self.text(node, "comment channel")
        if channel is None:
            return None
        base, _, audience = channel.partition(":")
        self.check_channel(node, base, channels)
        if ":" in channel and (self.system != "jira" or not audience or audience in ("group", "group:")):
            self.problem(node, f"comment channel {channel!r} cannot be restricted that way",
                         "on Jira write comment:<role> or comment:group:<group>; ServiceNow channels "
                         "take no suffix")
        return channel, bool(audience)
