"""The Scale section of ``bench/RESULTS.md`` and the scale benchmark's raw numbers.

The section sits between its own markers below the keep marker, so the registry part (which rewrites
everything above the keep marker) and the engine part leave it alone, and a scale run replaces only it.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from bench.report import TargetCheck, targets_table
from bench.scale_run import OPS, ScaleResults

__all__ = ["BEGIN", "END", "P99_RATIO", "scale_checks", "scale_json", "scale_section", "splice_scale"]

BEGIN = "<!-- Scale section: rewritten by the scale part of `python -m bench`. -->"
END = "<!-- End of the Scale section. -->"
P99_RATIO = 1.5


def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1f}"


def scale_checks(results: ScaleResults) -> list[TargetCheck]:
    """p99 at the large size within ``P99_RATIO`` × the small size's, per op."""
    checks = []
    for name in OPS:
        small, large = results.latency.get((name, "small")), results.latency.get((name, "large"))
        if small is None or large is None:
            continue
        ratio = large.p99 / small.p99 if small.p99 > 0 else math.nan
        checks.append(TargetCheck(
            f"scale: {name}, p99 at {results.cfg.models * results.cfg.versions:,} versions ÷ p99 at "
            f"{results.cfg.versions}", "—" if math.isnan(ratio) else f"{ratio:.2f}×", f"≤{P99_RATIO:g}×",
            None if math.isnan(ratio) else ratio <= P99_RATIO))
    return checks


def _latency_table(results: ScaleResults) -> list[str]:
    cfg = results.cfg
    out = [
        f"| op ({cfg.threads} clients at once) | p50 ms @{cfg.versions} | p99 ms @{cfg.versions} "
        f"| p50 ms @{cfg.models * cfg.versions:,} | p99 ms @{cfg.models * cfg.versions:,} | p50 ratio | p99 ratio "
        "| server CPU ms/call small / large | ops/s small / large | calls (errors) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in OPS:
        small, large = results.latency.get((name, "small")), results.latency.get((name, "large"))
        if small is None or large is None:
            continue
        out.append(
            f"| {name} | {_ms(small.p50)} | {_ms(small.p99)} | {_ms(large.p50)} | {_ms(large.p99)} "
            f"| {large.p50 / small.p50:.2f}× | {large.p99 / small.p99:.2f}× "
            f"| {small.server_cpu_ms_per_call:.2f} / {large.server_cpu_ms_per_call:.2f} "
            f"| {small.ops_per_s:.0f} / {large.ops_per_s:.0f} | {small.n} ({small.errors}) / {large.n} "
            f"({large.errors}) |")
    return out


def _replica_table(results: ScaleResults) -> list[str]:
    out = ["| op | 1 replica ops/s | 2 replicas ops/s | ratio | p99 ms 1 / 2 | server cores 1 / 2 |",
           "|---|---|---|---|---|---|"]
    for name in OPS:
        one, two = results.replicas.get((name, 1)), results.replicas.get((name, 2))
        if one is None or two is None:
            continue
        out.append(f"| {name} | {one.ops_per_s:.0f} | {two.ops_per_s:.0f} | {two.ops_per_s / one.ops_per_s:.2f}× "
                   f"| {_ms(one.p99)} / {_ms(two.p99)} | {one.server_cores:.2f} / {two.server_cores:.2f} |")
    return out


def scale_section(results: ScaleResults, *, command: str, date: str, machine: dict[str, str],
                  load: tuple[float, float], wall_s: float) -> str:
    """The Scale section of RESULTS.md, markers included."""
    cfg, seed = results.cfg, results.seed
    checks = scale_checks(results)
    met = sum(1 for c in checks if c.met)
    seeded = ("not seeded" if seed is None else
              f"{seed.models:,} clones, {seed.versions:,} versions and {seed.audit_events:,} audit events in "
              f"{seed.sql_s:.1f} s of SQL (one transaction), artifact trees hard-linked in {seed.files_s:.1f} s")
    per_ms = results.template_s / cfg.versions * 1000
    counts = "; ".join(f"{size}: " + ", ".join(f"{n:,} {table}" for table, n in c.items())
                       for size, c in results.counts.items())
    out = [
        BEGIN,
        f"## Scale: {cfg.models:,} models × {cfg.versions} versions on PostgreSQL",
        "",
        f"- Command: `{command}` (`make bench` runs every part, `make bench-scale` only this one); {cfg.mode} run.",
        f"- Date: {date}; scale part {wall_s / 60:.1f} min; load average (1 min) at start {load[0]:.2f}, at end "
        f"{load[1]:.2f}. Machine: {machine.get('nproc', '?')} cores, {machine.get('cpu', '?')}, "
        f"{machine.get('memory', '')}; shared with other jobs.",
        f"- Database: {results.postgres}, started from the installed binaries as `tests/fixtures/postgres.py` does "
        "(127.0.0.1, fsync and synchronous_commit off), two databases on it, each served by its own "
        "`calabi serve --no-temporal --no-tracking` (one API worker, pool size 16):",
        *[f"  - {size}: `{c}`" for size, c in results.commands.items()],
        f"- Small: 1 model × {cfg.versions} versions (`scale-0000`, registered through the mlflow client). "
        f"Large: the same model registered the same way ({results.template_s:.1f} s), then cloned "
        f"{cfg.models - 1:,} times straight into the schema `alembic upgrade head` built: {seeded}. The clones "
        "copy the template's rows (model, versions, tags, aliases) and its audit events with the name and "
        "artifact ids replaced; the events are appended after the chain head under its row lock and hashed by "
        "the documented rule, so the chain verifies. Why SQL and not the services: a registration copies and "
        f"digests an artifact tree and appends an event, {per_ms:.0f} ms each here (the template's), "
        f"~{per_ms * cfg.models * cfg.versions / 60_000:.0f} min for {cfg.models * cfg.versions:,}; the clone is "
        "what the services wrote, copied. Each template: alias `bench` → 50, version 30 Archived, 40 Staging, "
        "next_version 101.",
        f"- Seeded data read back: {counts}. Invariants checked by SQL (every counter above its versions, at most "
        "one Production per model, every alias on its own model's version, audit head = last event = count); "
        f"`GET /api/v1/audit/verify` on the large database: ok={results.audit.get('ok')}, "
        f"{results.audit.get('events_checked', 0):,} events in {results.audit.get('seconds', 0)} s. "
        "Then `ANALYZE`.",
        f"- Method: {cfg.threads} client threads at once (one process, raw HTTP, one kept-alive session per "
        f"thread), {cfg.calls_per_thread} calls each per run (cap {cfg.cap_s:.0f} s), small and large measured "
        f"alternately, {cfg.rounds} rounds pooled (p50/p99 over every call). Get-by-alias is "
        "`GET /api/2.0/mlflow/registered-models/alias`, get-latest-versions `POST …/registered-models/"
        "get-latest-versions`, both of a random model (always `scale-0000` on small); a transition is "
        "`POST …/model-versions/transition-stage` Staging↔None of a random version of a random model (each "
        "thread owns the versions ≡ its index mod threads, so two moves never race; 30/40/50 are left alone). "
        "Untimed warm-up calls first.",
        "",
        f"### Scale targets: {met} of {len(checks)} met",
        "",
        *targets_table(checks),
        "",
        "### Latency: 100 versions vs 100,000",
        "",
        *_latency_table(results),
        "",
        "### One replica vs two (large database; report only: 2 cores run the clients, both replicas and "
        "PostgreSQL)",
        "",
        f"The same {cfg.threads} threads against one replica, then split over two (`calabi serve` twice, same "
        "data dir and database, thread t → replica t mod 2). Server cores: both replicas' CPU per wall second.",
        "",
        *_replica_table(results),
        END,
    ]
    return "\n".join(out) + "\n"


def splice_scale(page: str, section: str) -> str:
    """``page`` with its Scale section replaced by ``section``, or with it appended (below the keep marker)."""
    start, end = page.find(BEGIN), page.find(END)
    if 0 <= start < end:
        return page[:start] + section.rstrip("\n") + page[end + len(END):]
    return page.rstrip("\n") + "\n\n" + section


def scale_json(results: ScaleResults) -> dict[str, Any]:
    """The scale benchmark's raw numbers."""
    return {
        "config": asdict(results.cfg),
        "postgres": results.postgres,
        "commands": results.commands,
        "template_s": round(results.template_s, 2),
        "seed": None if results.seed is None else asdict(results.seed),
        "counts": results.counts,
        "audit_verify": results.audit,
        "latency": {f"{name} @{size}": s.as_dict() for (name, size), s in results.latency.items()},
        "replicas": {f"{name} x{n} replicas": s.as_dict() for (name, n), s in results.replicas.items()},
        "checks": [{"name": c.name, "measured": c.measured, "target": c.target, "met": c.met}
                   for c in scale_checks(results)],
    }
