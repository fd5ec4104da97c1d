"""``python -m bench.loader_pool``: one model load through a cold sandboxed loader vs a warm pooled one,
and the pool's hit rate in a burst.

A small StandardScaler + LogisticRegression pipeline saved with mlflow is loaded (its importances
read) through ``activities.importances.model_importances``: cold = a pool of size 0 (the loader
starts, imports mlflow and sklearn, then loads); warm = a started pool whose loader finished
importing before the job. The burst hands ``--burst`` jobs to ``--slots`` threads (the heavy queue's
slots) over a pool of ``--size`` loaders and reports latency and the share of jobs that found a warm
loader. Real processes, real bubblewrap; prints a small table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from activities.importances import model_importances
from activities.loader_pool import STARTUP_TIMEOUT_S, LoaderPool
from bench.stats import percentile

__all__ = ["main"]


def _model(root: Path) -> Path:
    import mlflow.sklearn
    import pandas as pd  # type: ignore[import-untyped]
    from sklearn import linear_model, pipeline, preprocessing

    rows = [(float(i % 17), float((i * 7) % 23), float(i % 5)) for i in range(80)]
    x = pd.DataFrame(rows, columns=["tenure", "monthly_charges", "support_calls"])
    model = pipeline.make_pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    model.fit(x, [int(r[0] < 8) for r in rows])
    path = root / "model"
    mlflow.sklearn.save_model(model, str(path), pip_requirements=["scikit-learn"])
    return path


def _load(pool: LoaderPool, model: Path) -> float:
    """Seconds for one load through ``pool``."""
    def fill(into: Path) -> None:
        shutil.copytree(model, into, dirs_exist_ok=True)

    started = time.monotonic()
    model_importances(pool, fill, tick=lambda: None)
    return time.monotonic() - started


def _warm(pool: LoaderPool) -> None:
    """Wait (bounded) until the pool's idle loaders finished importing."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not all(loader.warm() for loader in list(pool._idle)):  # bench-only peek at the idle loaders
        if time.monotonic() > deadline:
            raise TimeoutError("the pool did not warm up")
        time.sleep(0.05)


def _row(name: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return f"| {name} | {len(ordered)} | {percentile(ordered, 50):.2f} | {percentile(ordered, 99):.2f} |"


def _timed(what: Callable[[], float], times: int) -> list[float]:
    return [what() for _ in range(times)]


def main() -> None:
    """Measure and print cold vs warm latency and the burst's hit rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--burst", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--size", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="calabi-bench-loader-") as tmp:
        model = _model(Path(tmp))
        cold = _timed(lambda: _load(LoaderPool(0), model), args.samples)
        pool = LoaderPool(args.size)
        try:
            pool.start()

            def warm_load() -> float:
                _warm(pool)
                return _load(pool, model)

            warm = _timed(warm_load, args.samples)
            _warm(pool)
            jobs, hits = pool.jobs, pool.hits
            started = time.monotonic()
            with ThreadPoolExecutor(args.slots) as slots:
                burst = list(slots.map(lambda _: _load(pool, model), range(args.burst)))
            elapsed = time.monotonic() - started
            burst_jobs, burst_hits = pool.jobs - jobs, pool.hits - hits
        finally:
            pool.close()
    print("| loads | n | p50 s | p99 s |\n|---|---|---|---|")
    print(_row("cold (a new sandboxed interpreter per load)", cold))
    print(_row("warm (pooled loader, imports done)", warm))
    print(_row(f"burst of {args.burst} on {args.slots} slots, pool of {args.size}", burst))
    print(f"\nburst: {burst_hits}/{burst_jobs} jobs found a warm loader ({burst_hits / burst_jobs:.0%}), "
          f"{elapsed:.1f} s in all, {args.burst / elapsed:.2f} loads/s")


if __name__ == "__main__":
    main()
