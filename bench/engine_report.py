"""The Engine section of ``bench/RESULTS.md``: targets, rounds, what did not pass, each activity's time.

The section sits between two markers, so the registry benchmark and the engine benchmark can
each rewrite their own part of the page (``splice``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.engine_history import ActivityRun
from bench.engine_rounds import RoundResult
from bench.engine_run import CHECKS, EngineResults
from bench.report import KEEP_MARKER, TargetCheck, targets_table
from bench.stats import percentile

__all__ = ["BEGIN", "END", "engine_checks", "engine_section", "old_section", "splice"]

BEGIN = "<!-- Engine section: rewritten by the engine part of `python -m bench`. -->"
END = "<!-- End of the Engine section. -->"
SINGLE_P50 = 1.5
BURST_P99 = 3.0
BURST_RATE = 1.5


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:,.0f}"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:.2f}×"


def _p(values: Sequence[float], q: float, n: int) -> float:
    """Nearest-rank percentile over ``n`` workflows, those without a value counting as never (∞)."""
    if n == 0:
        return math.nan
    return percentile(sorted([*values, *[math.inf] * (n - len(values))]), q)


def _round(results: EngineResults, system: str, n: int) -> RoundResult | None:
    return results.rounds.get((system, n))


def _at_most(name: str, ratio: float, limit: float) -> TargetCheck:
    return TargetCheck(name, _ratio(ratio), f"≤{limit:g}×", None if math.isnan(ratio) else ratio <= limit)


def engine_checks(results: EngineResults) -> list[TargetCheck]:
    """The issue's engine targets as ratios to the floor, and no false verdicts."""
    checks: list[TargetCheck] = []
    single, burst = min(results.cfg.rounds), max(results.cfg.rounds)
    mine, floor = _round(results, "calabi", single), _round(results, "floor", single)
    if mine is not None and floor is not None:
        ratio = _p(mine.awaiting_ms, 50, mine.n) / _p(floor.awaiting_ms, 50, floor.n)
        checks.append(_at_most(f"engine: {single} promotion, submit → awaiting_sign_off p50 ÷ floor p50", ratio,
                               SINGLE_P50))
    mine, floor = _round(results, "calabi", burst), _round(results, "floor", burst)
    if mine is not None and floor is not None:
        ratio = _p(mine.awaiting_ms, 99, mine.n) / _p(floor.awaiting_ms, 99, floor.n)
        checks.append(_at_most(f"engine: {burst} at once, submit → awaiting_sign_off p99 ÷ floor p99", ratio,
                               BURST_P99))
        slower = floor.rate / mine.rate if mine.rate > 0 else math.inf
        checks.append(_at_most(f"engine: {burst} at once, floor workflows/s ÷ promotions/s", slower, BURST_RATE))
    calabi = [r for (system, _), r in results.rounds.items() if system == "calabi"]
    if calabi:
        wrong = sum(len(r.not_passed) for r in calabi)
        total = sum(r.n for r in calabi)
        checks.append(TargetCheck("engine: no false verdicts (every promotion awaits sign-off, all checks passed, "
                                  "and is promoted)", f"{wrong} of {total}", "0", wrong == 0))
    return checks


def _rounds_table(results: EngineResults) -> list[str]:
    out = [
        "| at once | side | reached awaiting | not passed | submit → awaiting p50 ms | p99 ms | seen by polling p50 ms "
        "| p99 ms | sign-off → promoted p50 ms | p99 ms | promoted | wall: checks + apply s | per second "
        "| CPU s per promotion | Temporal CPU s per promotion |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in results.cfg.rounds:
        for system, label in (("floor", "floor"), ("calabi", "Calabi")):
            r = _round(results, system, n)
            if r is None:
                continue
            observed = ["—", "—"] if system == "floor" else [_ms(_p(r.observed_ms, q, r.n)) for q in (50, 99)]
            per = max(r.promoted, 1)
            out.append(
                f"| {n} | {label} | {len(r.awaiting_ms)}/{r.n} | {len(r.not_passed)} "
                f"| {_ms(_p(r.awaiting_ms, 50, r.n))} | {_ms(_p(r.awaiting_ms, 99, r.n))} | {' | '.join(observed)} "
                f"| {_ms(_p(r.signoff_ms, 50, len(r.awaiting_ms)))} | {_ms(_p(r.signoff_ms, 99, len(r.awaiting_ms)))} "
                f"| {r.promoted}/{r.n} | {r.phase_a_s:.1f} + {r.phase_b_s:.1f} | {r.rate:.2f} "
                f"| {r.cpu_s / per:.2f} | {r.temporal_cpu_s / per:.2f} |"
            )
    return out


def _activity_table(results: EngineResults) -> list[str]:
    """Calabi's activities by label and round: scheduled → closed p50/p99 ms (queueing and retries included)."""
    rounds = [(n, r) for n in results.cfg.rounds if (r := _round(results, "calabi", n)) is not None]
    labels = list(dict.fromkeys(a.label for _, r in rounds for a in r.activities))  # first-seen order
    columns = " | ".join(f"{n} at once: p50 ms | p99 ms | n" for n, _ in rounds)
    head = f"| activity | {columns} | not completed at first try |"
    out = [head, "|---|" + "---|---|---|" * len(rounds) + "---|"]
    for label in labels:
        cells: list[str] = []
        retried: list[ActivityRun] = []
        for _, r in rounds:
            runs = [a for a in r.activities if a.label == label]
            totals = sorted(a.total_ms for a in runs)
            cells += [_ms(percentile(totals, 50)), _ms(percentile(totals, 99)), str(len(runs))]
            retried += [a for a in runs if a.attempts > 1 or a.outcome != "completed"]
        note = ", ".join(f"{count}× {what}" for what, count in Counter(
            f"{a.outcome} after {a.attempts} attempt(s)" for a in retried).items()) or "—"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {note} |")
    return out


def _not_passed(results: EngineResults) -> list[str]:
    out: list[str] = []
    for (system, n), r in sorted(results.rounds.items(), key=lambda item: item[0][1]):
        if system != "calabi" or not r.not_passed:
            continue
        grouped = Counter((v.status, v.message) for v in r.not_passed)
        out.append(f"- **{n} at once: {len(r.not_passed)} of {n}**")
        out += [f"  - {count}× `{status}`: {message[:500] or '(no message)'}"
                for (status, message), count in grouped.items()]
    warm = results.warmup.get("calabi")
    if warm is not None and warm.not_passed:
        out.append("- warm-up: " + "; ".join(f"`{v.status}` {v.message}" for v in warm.not_passed))
    return out


def _errors(results: EngineResults) -> list[str]:
    found = [(f"{system} {n}", e) for (system, n), r in results.rounds.items() for e in r.errors]
    found += [(f"{system} warm-up", e) for system, r in results.warmup.items() for e in r.errors]
    return [f"- {where}: `{error[:400]}`" for where, error in found]


def _polling(results: EngineResults) -> str:
    polls = [ms for r in results.rounds.values() for ms in r.poll_ms]
    if not polls:
        return "- Polling: none."
    return (f"- Polling cost: {len(polls)} `GET /api/v1/promotions` over the Calabi rounds, p50 "
            f"{percentile(sorted(polls), 50):.1f} ms, p99 {percentile(sorted(polls), 99):.1f} ms each; their server "
            "CPU is inside Calabi's CPU per promotion.")


def engine_section(results: EngineResults, *, command: str, date: str, load: tuple[float, float], wall_s: float
                   ) -> str:
    """The Engine section of RESULTS.md, markers included."""
    checks = engine_checks(results)
    met = sum(1 for c in checks if c.met)
    evaluated = sum(1 for c in checks if c.met is not None)
    pool = "no pool job in the worker's log (`bench/engine_run.py: loader_pool_hit_rate`)"
    if results.loader_pool is not None:
        hits, jobs = results.loader_pool
        pool = (f"{hits / jobs:.0%} ({hits} of {jobs} model loads found a warm loader, over the whole run: "
                "the loads happen in the background at registration, a promotion reuses the stored evidence)")
    out = [
        BEGIN,
        "## Engine: promotions vs a bare Temporal workflow (the floor)",
        "",
        f"- Command: `{command}` (`make bench` runs both parts, `make bench-engine` only this one)",
        f"- Date: {date}; engine part {wall_s / 60:.1f} min; load average (1 min) at start {load[0]:.2f}, at end "
        f"{load[1]:.2f} (the machine is shared; a busy machine slows the CPU-bound checks most).",
        *[f"- {name}: `{command}`" for name, command in results.commands.items()],
        f"- Candidates: {results.registered} models, each version 1 of its own registered model: a StandardScaler + "
        "LogisticRegression pipeline on its own synthetic data (its own artifact digest), MLflow format with a "
        "signature, `metrics.json`, tag `ci.tests_passed=true`, a description with the training-data range and "
        "auc/log_loss, the model's serving schema set to its signature, moved to Staging. The default policy "
        f"runs all {CHECKS} checks on them and every one passes when judged on a quiet machine. Registered "
        f"beforehand, not timed: {results.register_s:.1f}s, then Calabi's CPU until the machine was quiet again "
        f"{results.register_cpu_s:.1f}s (background work started by registration included).",
        f"- The floor (`bench/floor_workflow.py`): the {results.floor_shape.count()} activities a passing promotion "
        f"runs, {results.floor_shape_source}: {results.floor_shape.describe()}; as no-ops, in its own worker process "
        "configured as Calabi's (same thread pool), on the same dev server. Its driver waits on an update instead "
        "of polling.",
        "- Each round: the floor's N workflows started at once, then Calabi's N promotions POSTed at once "
        "(concurrent HTTP) to one `calabi serve` with one worker; the driver polls the read model with one "
        f"`GET /api/v1/promotions` every {results.cfg.poll_s * 1000:.0f} ms until each promotion awaits sign-off "
        "or stopped, signs every waiting one off at once (approver ≠ requester) and polls until promoted. The "
        "machine is let go quiet before each round; one untimed warm-up promotion on each side first.",
        "- Times come from each workflow's Temporal history, read the same way on both sides: submit (client clock "
        "before the POST / start) → the activity that writes `awaiting_sign_off` into the read model completed; "
        "sign-off sent → `apply_promotion` completed (the row is `promoted`). A promotion that never got there "
        "counts as ∞ in p50/p99. \"Seen by polling\" is what the polling client saw (≤ one interval later). "
        "Per second = promoted ÷ (checks wall + apply wall), each from the first submit/sign-off to the last "
        "workflow's step. CPU: user+system of every process in the system's tree (`calabi serve`, its worker, "
        "sandboxed loaders; the floor's worker), sampled from /proc every 0.2 s (a sandboxed process's CPU never "
        "reaches its parent's cutime); Temporal CPU is the dev server's.",
        "",
        f"### Engine targets: {met} of {evaluated} met",
        "",
        *targets_table(checks),
        "",
        "### Rounds",
        "",
        *_rounds_table(results),
        "",
        "### Promotions that did not pass (false verdicts: every candidate passes on a quiet machine)",
        "",
        *(_not_passed(results) or ["None."]),
        "",
        "### Time of each Calabi activity (scheduled → closed: queueing, attempts and retry backoff included)",
        "",
        *_activity_table(results),
        "",
        "### Polling, loader pool, errors",
        "",
        _polling(results),
        f"- Loader pool hit rate: {pool}.",
        f"- Waits for a quiet machine (s): {', '.join(f'{q:.0f}' for q in results.quiet_s)}.",
        *(_errors(results) or ["- No driver errors."]),
        END,
    ]
    return "\n".join(out) + "\n"


def old_section(path: Path) -> str | None:
    """The Engine section of an existing results page, markers included."""
    if not path.exists():
        return None
    text = path.read_text()
    start, end = text.find(BEGIN), text.find(END)
    return text[start : end + len(END)] + "\n" if 0 <= start < end else None


def splice(page: str, section: str | None) -> str:
    """``page`` with its Engine section replaced by ``section`` (or put before the kept notes, or at the end)."""
    if section is None:
        return page
    start, end = page.find(BEGIN), page.find(END)
    if 0 <= start < end:
        return page[:start] + section.rstrip("\n") + page[end + len(END) :]
    keep = page.find(KEEP_MARKER)
    if keep >= 0:
        return page[:keep] + section + "\n" + page[keep:]
    return page.rstrip("\n") + "\n\n" + section
