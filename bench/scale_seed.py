"""Seed the scale benchmark's database in bulk: clones of the template model, by COPY, in one transaction.

The template (model 0) was registered through the API. Its registered-model row, version rows, tags,
aliases and audit events are read back and copied for every clone (``bench.scale_plan``), with the
chain head locked (``SELECT … FOR UPDATE`` on ``audit_head``, as every append does) and advanced in
the same transaction. Each clone version gets its own artifact tree, hard links to the template's
files (same bytes, so the recorded digests hold). ``check_invariants`` reads the result back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bench.scale_plan import TEMPLATE, AuditEvent, Clone, clone_events, clone_plan

__all__ = ["SeedResult", "check_invariants", "seed_clones"]

@dataclass(frozen=True)
class SeedResult:
    """What the seeding wrote and how long it took."""

    models: int
    versions: int
    audit_events: int
    sql_s: float
    files_s: float


def _rows(cur: psycopg.Cursor[dict[str, Any]], query: str, *params: object) -> list[dict[str, Any]]:
    cur.execute(query, params)
    return cur.fetchall()


def _copy(cur: psycopg.Cursor[dict[str, Any]], table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
          ) -> None:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
    with cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _renamed(row: dict[str, Any], clone: Clone, **override: Any) -> list[Any]:
    """The row's values without ``id``, its texts renamed for ``clone``, some columns overridden."""
    return [override[k] if k in override else clone.rename(v) if isinstance(v, str) else v
            for k, v in row.items() if k != "id"]


def _local_dir(location: str) -> Path:
    return Path(unquote(urlsplit(location).path))


def _refuse_uncloned(cur: psycopg.Cursor[dict[str, Any]], model_id: int) -> None:
    for table, column in (("serving_schemas", "model_id"), ("model_grants", "model_id"),
                          ("promotions", "model_name"), ("post_implementation_reviews", "model_name")):
        key: object = model_id if column == "model_id" else TEMPLATE
        found = _rows(cur, f"SELECT count(*) AS n FROM {table} WHERE {column} = %s", key)[0]["n"]
        if found:
            raise RuntimeError(f"the template has {found} row(s) in {table}, which the seeding does not clone")


def seed_clones(conninfo: str, models: int) -> SeedResult:
    """Copy the template model ``models - 1`` times (models 1 … ``models - 1``); one transaction."""
    started = time.perf_counter()
    with psycopg.connect(conninfo, row_factory=dict_row) as conn, conn.cursor() as cur:
        head = _rows(cur, "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")[0]
        model = _rows(cur, "SELECT * FROM registered_models WHERE name = %s", TEMPLATE)[0]
        _refuse_uncloned(cur, model["id"])
        versions = _rows(cur, "SELECT * FROM model_versions WHERE model_id = %s ORDER BY version", model["id"])
        version_tags = _rows(cur, "SELECT v.version, t.key, t.value FROM model_version_tags t "
                                  "JOIN model_versions v ON v.id = t.version_id WHERE v.model_id = %s", model["id"])
        model_tags = _rows(cur, "SELECT key, value FROM registered_model_tags WHERE model_id = %s", model["id"])
        aliases = _rows(cur, "SELECT a.alias, v.version FROM registered_model_aliases a "
                             "JOIN model_versions v ON v.id = a.version_id WHERE a.model_id = %s", model["id"])
        names = [f.name for f in fields(AuditEvent)]
        template_events = [AuditEvent(**row) for row in _rows(
            cur, f"SELECT {', '.join(names)} FROM audit_events WHERE model_name = %s ORDER BY seq", TEMPLATE)]
        clones = list(clone_plan(models, [v["artifact_id"] for v in versions]))

        _copy(cur, "registered_models", [k for k in model if k != "id"], [_renamed(model, c) for c in clones])
        ids = {r["name"]: r["id"] for r in _rows(
            cur, "SELECT id, name FROM registered_models WHERE name = ANY(%s)", [c.name for c in clones])}
        _copy(cur, "model_versions", [k for k in versions[0] if k != "id"],
              [_renamed(v, c, model_id=ids[c.name]) for c in clones for v in versions])
        version_ids = {(r["model_id"], r["version"]): r["id"] for r in _rows(
            cur, "SELECT id, model_id, version FROM model_versions WHERE model_id = ANY(%s)", list(ids.values()))}
        _copy(cur, "model_version_tags", ["version_id", "key", "value"],
              [(version_ids[ids[c.name], t["version"]], t["key"], t["value"]) for c in clones for t in version_tags])
        _copy(cur, "registered_model_tags", ["model_id", "key", "value"],
              [(ids[c.name], t["key"], t["value"]) for c in clones for t in model_tags])
        _copy(cur, "registered_model_aliases", ["model_id", "alias", "version_id"],
              [(ids[c.name], a["alias"], version_ids[ids[c.name], a["version"]]) for c in clones for a in aliases])
        events = list(clone_events(template_events, clones, head_seq=head["seq"], head_hash=head["hash"]))
        _copy(cur, "audit_events", [*names], [[getattr(e, n) for n in names] for e in events])
        if events:
            cur.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1", (events[-1].seq, events[-1].hash))
        sql_s = time.perf_counter() - started
        files_started = time.perf_counter()
        _link_trees(versions, clones)
        files_s = time.perf_counter() - files_started
    return SeedResult(len(clones), len(clones) * len(versions), len(events), sql_s, files_s)


def _link_trees(versions: Sequence[dict[str, Any]], clones: Sequence[Clone]) -> None:
    """Each clone version's artifact tree: hard links to the template version's files."""
    for version in versions:
        source = _local_dir(version["storage_location"])
        files = [p.relative_to(source) for p in source.rglob("*") if p.is_file()]
        for clone in clones:
            target = _local_dir(clone.rename(version["storage_location"]))
            for rel in files:
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(source / rel, target / rel)


def check_invariants(conninfo: str) -> dict[str, int]:
    """Counts, and the registry's invariants over every model; raises when one does not hold."""
    checks = {
        "counters behind a version": "SELECT count(*) AS n FROM registered_models m WHERE m.next_version <= "
                                     "(SELECT coalesce(max(version), 0) FROM model_versions v WHERE v.model_id = m.id)",
        "models with two Production versions": "SELECT count(*) AS n FROM (SELECT model_id FROM model_versions "
                                               "WHERE current_stage = 'Production' GROUP BY model_id "
                                               "HAVING count(*) > 1) x",
        "aliases to another model's version": "SELECT count(*) AS n FROM registered_model_aliases a "
                                              "JOIN model_versions v ON v.id = a.version_id "
                                              "WHERE v.model_id <> a.model_id",
        "audit head off the last event": "SELECT count(*) AS n FROM audit_head h WHERE h.seq <> "
                                         "(SELECT coalesce(max(seq), 0) FROM audit_events) OR h.seq <> "
                                         "(SELECT count(*) FROM audit_events)",
    }
    with psycopg.connect(conninfo, row_factory=dict_row) as conn, conn.cursor() as cur:
        broken = {name: n for name, query in checks.items() if (n := _rows(cur, query)[0]["n"])}
        if broken:
            raise RuntimeError(f"seeded data breaks invariants: {broken}")
        counts = {table: _rows(cur, f"SELECT count(*) AS n FROM {table}")[0]["n"]
                  for table in ("registered_models", "model_versions", "registered_model_aliases", "audit_events")}
        cur.execute("ANALYZE")
    return counts
