"""``python -m bench.floor_worker ADDRESS TASK_QUEUE``: the floor's plain Temporal worker, in its own process.

Configured as Calabi's worker is (``worker.run_worker``: a thread pool of the same size for the
synchronous activities, the default workflow sandbox), but running ``FloorWorkflow`` and its
no-op activities only. Stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from bench.floor_workflow import FLOOR_ACTIVITIES, FloorWorkflow

__all__ = ["ACTIVITY_THREADS", "main"]

ACTIVITY_THREADS = 16
"""As ``worker.ACTIVITY_THREADS`` (not imported: that would load the whole registry into the floor's process)."""


async def _serve(address: str, task_queue: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    client = await Client.connect(address)
    with ThreadPoolExecutor(max_workers=ACTIVITY_THREADS, thread_name_prefix="floor-activity") as pool:
        async with Worker(
            client, task_queue=task_queue, workflows=[FloorWorkflow], activities=FLOOR_ACTIVITIES,
            activity_executor=pool,
        ):
            print(f"floor worker polling {task_queue} on {address}", flush=True)
            await stop.wait()


def main(argv: list[str]) -> int:
    """Run the floor worker until it is told to stop."""
    address, task_queue = argv
    asyncio.run(_serve(address, task_queue))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
