"""Running dataset units on a Dask cluster (``codecnn make-dataset --dask``; ``codecnn evaluate --dask`` runs its
fresh encodes the same way, see :func:`codecnn.eval.runs.cluster_encode_runs`).

``--dask tcp://HOST:8786`` uses a running scheduler; ``--dask local:N`` starts a ``LocalCluster`` of N worker
processes (one thread each) and closes it at the end. Each (sequence, QP) unit is one Dask task running the
ordinary unit function: the worker reads the sequence and writes its shard into ``OUT.parts/`` by path, so
that folder must be on storage every worker sees (checked at start-up with a marker file). Only the small
unit descriptions travel through the scheduler; the merge runs where codecnn was started.

A worker that dies mid-unit is replaced and its unit rescheduled by Dask (shards are written under a
temporary name and renamed, so a half-written one never enters the merge). A unit that fails for its own
reason (an encoder error) fails the build once the other units have finished.

Dask is optional: ``pip install codecnn[cluster]``. It is imported only when ``--dask`` is given.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from codecnn.errors import CodecnnError

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5  # seconds to reach a scheduler
TOP_UP = 2.0  # seconds between looks for new workers while units run
# A local cluster runs on the cores its encodes need: no dashboard, so no statistical profiler (it samples every
# worker thread's stack every 10 ms); the event-loop, system and memory monitors at a slower pace; and glibc's
# own malloc trimming instead of Dask's MALLOC_TRIM_THRESHOLD_=65536 (which hands memory back to the system at
# every free, so each frame buffer is mapped and zeroed again). Measured on 2 cores with single-threaded x265
# (scripts/bench_dataset.py, bigbuckbunny 96 frames x 4 QPs): the encodes' summed time 6-11 % above a process
# pool's with Dask's defaults, the same (-0.6 %) with these.
LOCAL_QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 (memory back to the system at every free) left out
    "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
}
INSTALL = 'pip install "codecnn[cluster]"'


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise CodecnnError(f"--dask needs Dask's distributed scheduler: {INSTALL}") from None
    return distributed


def check_address(address: str) -> str:
    """Validate ``--dask``'s value early (no import, no connection): ``local:N`` or ``[tcp://]HOST:PORT``."""
    if address.startswith("local:"):
        n = address.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise CodecnnError(f"--dask {address}: give local:N with N >= 1 worker processes")
        return address
    if not re.fullmatch(r"(\w+://)?[^\s/:]+:\d+", address):
        raise CodecnnError(f"--dask {address}: give a scheduler address (tcp://HOST:8786) or local:N")
    return address


class DaskRunner:
    """A client on the cluster named by ``address`` (a context manager: ``local:N`` clusters are closed on exit).

    A running scheduler is reached at once (an unreachable one fails before anything is written). A
    ``local:N`` cluster starts in a background thread while the caller prepares its units (staging the
    sources), its workers importing the modules named in ``preload`` as they start, so that neither the
    start-up nor the first task's imports hold up the encodes; the first use of :attr:`client` waits for it.
    :meth:`release` lets the cluster close in the background (the caller merges meanwhile); leaving the
    context waits for that close.
    """

    def __init__(self, address: str, preload: tuple[str, ...] = ()):
        self.address = check_address(address)
        distributed = _import_distributed()
        self.cluster = None
        self._client = None
        self._failed: BaseException | None = None
        self._closing: threading.Thread | None = None
        # Dask's own INFO chatter (workers starting, connections) would flood codecnn's log; keep its warnings
        self._dask_log = logging.getLogger("distributed")
        self._old_level = self._dask_log.level
        self._dask_log.setLevel(max(self._old_level, logging.WARNING))
        if address.startswith("local:"):
            n = int(address.split(":", 1)[1])

            def start() -> None:
                import dask.config

                try:
                    with dask.config.set(LOCAL_QUIET):
                        self.cluster = distributed.LocalCluster(
                            n_workers=n,
                            processes=True,
                            threads_per_worker=1,
                            dashboard_address=None,
                            preload=list(preload),
                        )
                    self._client = distributed.Client(self.cluster, timeout=CONNECT_TIMEOUT)
                except BaseException as e:  # raised where the client is first needed
                    self._failed = e

            self._starting: threading.Thread | None = threading.Thread(target=start, name="codecnn-dask-start")
            self._starting.start()
            return
        self._starting = None
        try:
            self._client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            self.close()
            detail = " ".join(str(e).split()) or type(e).__name__
            raise CodecnnError(
                f"--dask {address}: no Dask scheduler answered within {CONNECT_TIMEOUT} s ({detail[:160]}); "
                "start one (dask scheduler) or use --dask local:N"
            ) from None

    @property
    def client(self):
        if self._starting is not None:
            self._starting.join()
            self._starting = None
        if self._failed is not None:
            failed, self._failed = self._failed, None
            self.close()
            raise CodecnnError(
                f"--dask {self.address}: the local cluster did not start ({type(failed).__name__}: "
                f"{' '.join(str(failed).split())[:160]})"
            ) from None
        if self._client is None:
            raise CodecnnError(f"--dask {self.address}: the cluster is closed")
        return self._client

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def release(self) -> None:
        """The units are done: close the client and a local cluster in a background thread."""
        if self._closing is None and self._starting is None:
            self._closing = threading.Thread(target=self._close_now, name="codecnn-dask-close")
            self._closing.start()

    def close(self) -> None:
        if self._starting is not None:  # never used: let it finish starting, then close it
            self._starting.join()
            self._starting = None
        if self._closing is not None:
            self._closing.join()
        self._close_now()
        self._dask_log.setLevel(self._old_level)

    def _close_now(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()

    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def check_shared(self, folder: Path) -> None:
        """Every worker must see ``folder`` (where the shards go) at the same path: write a marker file there
        and ask each worker whether it exists."""
        workers = self.workers()
        if not workers:
            raise CodecnnError(f"--dask {self.address}: the scheduler has no workers; start some (dask worker ADDRESS)")
        folder = Path(folder).absolute()
        marker = folder / f".dask-check-{uuid.uuid4().hex}"
        marker.write_text("codecnn\n")
        try:
            seen = self.client.run(os.path.exists, str(marker))
        finally:
            marker.unlink(missing_ok=True)
        blind = sorted(w for w, ok in seen.items() if not ok)
        if blind:
            raise CodecnnError(
                f"--dask: {len(blind)} of {len(seen)} workers ({', '.join(blind[:3])}) cannot see {folder}; "
                "the output folder must be on storage every worker mounts at the same path (e.g. NFS)"
            )

    def map(self, fn: Callable, units: Iterable, on_done: Callable[[], None] = lambda: None) -> list[tuple[str, float]]:
        """Run ``fn(unit)`` for every unit, one task each. Returns (worker, seconds) per unit in the given order.
        A unit that raises fails the whole run with its error, after the other units have finished."""
        return [(w, s) for w, s, _ in self.run_all(fn, units, on_done)]

    def run_all(self, fn: Callable, units: Iterable, on_done: Callable[[], None] = lambda: None) -> list[tuple]:
        """As :meth:`map`, with what ``fn`` returned: (worker, seconds, value) per unit in the given order (the
        value travels back through the scheduler: keep it small).

        The units are handed out as a process pool would: the longest first (:func:`unit_cost`), and no more
        at a time than the cluster has worker threads (counted again as units finish, and every
        :data:`TOP_UP` seconds, so workers that join later, e.g. queued batch jobs, are used as they come).
        Submitting them all at once would let the scheduler assign every unit to a worker up front (a few
        units count as no queue): a worker could then hold two long encodes while another sits idle.
        """
        distributed = _import_distributed()
        units = list(units)
        token = uuid.uuid4().hex[:8]
        waiting = deque(sorted(range(len(units)), key=lambda k: unit_cost(units[k]), reverse=True))  # longest first
        running: dict = {}  # future -> unit index
        results: list = [None] * len(units)
        first_error: BaseException | None = None

        def top_up() -> None:
            slots = max(1, sum(self.client.nthreads().values()))
            while waiting and len(running) < slots:
                k = waiting.popleft()
                key = f"codecnn-unit{k:04d}-{token}"
                running[self.client.submit(_task, fn, _absolute(units[k]), token, key=key, pure=False, retries=0)] = k

        top_up()
        while running:
            try:
                done, _ = distributed.wait(list(running), timeout=TOP_UP, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for fut in done:
                k = running.pop(fut)
                try:
                    results[k] = fut.result()
                except CodecnnError as e:
                    first_error = first_error or e
                except distributed.KilledWorker as e:
                    first_error = first_error or CodecnnError(
                        f"--dask: the workers running one encode died too often ({' '.join(str(e).split())[:200]})"
                    )
                except Exception as e:  # a worker-side failure of its own (a locked or full disk, permissions, ...)
                    detail = " ".join(str(e).split())[:200]
                    first_error = first_error or CodecnnError(
                        f"--dask: one encode failed on its worker: {type(e).__name__}: {detail}"
                    )
                on_done()
            top_up()
        if first_error is not None:
            raise first_error
        return results


def unit_cost(unit) -> tuple:
    """How long a unit's encode is expected to take, for ordering: its pixels (frames x width x height), then
    the lower QP first (more bits to code)."""
    info = getattr(unit, "info", None)
    pixels = info.num_frames * info.width * info.height if info is not None else 0
    qp = getattr(unit, "qp", None)
    return pixels, -(qp if qp is not None else 0)


def _absolute(unit):
    """The unit with its file paths made absolute: a worker's current folder is not ours."""
    import dataclasses

    def ab(p):
        return os.path.abspath(p) if p else p

    names = {f.name for f in dataclasses.fields(unit)}
    changes = {k: ab(getattr(unit, k)) for k in ("staged", "shard", "workdir") if k in names}
    if "spec" in names:
        changes["spec"] = dataclasses.replace(unit.spec, path=ab(unit.spec.path))
    return dataclasses.replace(unit, **changes)


def _task(fn: Callable, unit, token: str) -> tuple[str, float, object]:
    """The Dask task: one unit, in its own work folder per attempt (a killed attempt's encoder process may
    outlive its worker), timed. Returns (worker address, seconds, what ``fn`` returned)."""
    import dataclasses

    from distributed import get_worker

    t0 = time.perf_counter()
    attempt = dataclasses.replace(unit, workdir=f"{unit.workdir}-{token}-{uuid.uuid4().hex[:6]}")
    value = fn(attempt)
    return get_worker().address, time.perf_counter() - t0, value


def speed_lines(timings: list[tuple[str, float]], wall: float) -> list[str]:
    """Summary lines: time per worker and the speed-up (sum of unit times / wall time of the units)."""
    per: dict[str, list[float]] = {}
    for w, s in timings:
        per.setdefault(w, []).append(s)
    total = sum(s for _, s in timings)
    lines = [
        f"  worker {w}: {sum(v):.1f} s in {len(v)} encode{'s' if len(v) != 1 else ''}" for w, v in sorted(per.items())
    ]
    speed = total / wall if wall > 0 else float("nan")
    lines.append(
        f"speed-up {speed:.2f} on {len(per)} worker{'s' if len(per) != 1 else ''} "
        f"(sum of encode times {total:.1f} s / wall {wall:.1f} s)"
    )
    return lines
