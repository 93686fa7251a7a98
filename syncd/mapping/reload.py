"""Hot reload: the active mapping of each connector, swapped only for a valid edit.

An admin edits a mapping file while the daemon runs. ``MappingSet.reload()`` (the daemon's
supervised "mappings" loop every few seconds, and SIGHUP) re-reads files whose stat changed, skips
those whose content hash did not, and swaps in a new mapping only when it validates; a broken edit is logged and counted, and the previous mapping stays active.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping as MappingABC

from syncd.mapping.loader import load_mapping, parse_mapping
from syncd.mapping.model import Mapping, MappingError, Problem
from syncd.metrics import MAPPING_RELOADS

log = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    """What one reload did: connectors whose new mapping is now active, and those whose edit was
    refused (with every problem; the old mapping stays active)."""

    applied: list[str] = field(default_factory=list)
    rejected: dict[str, list[Problem]] = field(default_factory=dict)


@dataclass
class _Watched:
    path: Path
    mapping: Mapping
    stat_key: tuple | None       # (mtime_ns, size, inode) last looked at
    digest: str                  # sha256 of the content last looked at (applied or rejected)


def _stat_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


class MappingSet:
    """The active :class:`Mapping` per connector name. Reads are lock-free (a dict lookup of an
    immutable Mapping); ``reload`` swaps entries atomically under a lock."""

    def __init__(self, paths: MappingABC[str, str | Path]):
        """Load every connector's mapping; raise MappingError with all problems if any is invalid
        (the daemon refuses to start rather than run without a mapping)."""
        problems: list[Problem] = []
        self._watched: dict[str, _Watched] = {}
        for connector, path in paths.items():
            path = Path(path)
            stat_key = _stat_key(path)
            try:
                mapping = load_mapping(path)
            except MappingError as exc:
                problems.extend(exc.problems)
                continue
            self._watched[connector] = _Watched(path, mapping, stat_key, mapping.digest)
        if problems:
            raise MappingError(problems)
        self._lock = threading.Lock()

    def get(self, connector: str) -> Mapping:
        """The active mapping of a connector (KeyError names it if it has none)."""
        try:
            return self._watched[connector].mapping
        except KeyError:
            raise KeyError(f"no mapping for connector {connector!r}") from None

    def connectors(self) -> list[str]:
        return list(self._watched)

    def reload(self) -> ReloadResult:
        """Re-read changed mapping files; apply the valid ones, keep the old mapping for the rest.
        Each changed content is judged once, so a broken file is not re-counted every tick."""
        result = ReloadResult()
        with self._lock:
            for connector, watched in self._watched.items():
                stat_key = _stat_key(watched.path)
                if stat_key is not None and stat_key == watched.stat_key:
                    continue
                self._reload_one(connector, watched, stat_key, result)
        return result

    def _reload_one(self, connector: str, watched: _Watched, stat_key: tuple | None,
                    result: ReloadResult) -> None:
        try:
            data = watched.path.read_bytes()
        except OSError as exc:
            problems = [Problem(str(watched.path), 1, 1, f"cannot read the mapping file: {exc.strerror}",
                                "the previous mapping stays active until the file is back")]
            digest = f"unreadable:{exc.errno}"
        else:
            digest = hashlib.sha256(data).hexdigest()
            problems = []
        watched.stat_key = stat_key
        if digest == watched.digest:
            return
        watched.digest = digest
        if not problems:
            try:
                mapping = parse_mapping(data, source=str(watched.path))
            except MappingError as exc:
                problems = exc.problems
            else:
                watched.mapping = mapping
                result.applied.append(connector)
                MAPPING_RELOADS.labels(outcome="applied").inc()
                log.info("mapping reloaded", extra={"connector": connector, "path": str(watched.path),
                                                    "digest": digest})
                return
        result.rejected[connector] = problems
        MAPPING_RELOADS.labels(outcome="rejected").inc()
        log.error("mapping edit rejected; the previous mapping stays active",
                  extra={"connector": connector, "path": str(watched.path),
                         "problems": [str(p) for p in problems]})
