"""make-dataset on a real Dask cluster (LocalCluster worker processes on loopback) through real x265 encodes."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

import h5py
import numpy as np
import pytest

pytest.importorskip("distributed", reason="Dask is not installed (pip install codecnn[cluster])")

FAST = ["--size", "176x144", "--frames", "2", "--qp", "32", "--qp", "37", "--preset", "ultrafast"]
TIMING_KEYS = {"cut_seconds", "encode_seconds"}


def _cmd(yuv, out, *extra, fast=FAST):
    return [sys.executable, "-m", "codecnn", "make-dataset", "--yuv", str(yuv), *fast, "--out", str(out), *extra]


def _make(yuv, out, *extra, cwd=None, timeout=120, fast=FAST):
    return subprocess.run(_cmd(yuv, out, *extra, fast=fast), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _assert_same_dataset(a_path, b_path, samples=2 * 2 * 4):
    """Every array sample for sample, every attribute but ``created``, every meta JSON but the timings."""
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        names_a, names_b = [], []
        a.visit(names_a.append)
        b.visit(names_b.append)
        assert names_a == names_b
        assert {k: v for k, v in a.attrs.items() if k != "created"} == {
            k: v for k, v in b.attrs.items() if k != "created"
        }
        for name in names_a:
            if not isinstance(a[name], h5py.Dataset):
                continue
            if name.startswith("meta/"):
                ja, jb = json.loads(a[name][()]), json.loads(b[name][()])
                if name == "meta/units":
                    ja = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in ja]
                    jb = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in jb]
                assert ja == jb, name
            else:
                assert a[name].dtype == b[name].dtype, name
                np.testing.assert_array_equal(a[name][()], b[name][()], err_msg=name)
        assert a["input"].shape[0] == samples  # QPs x frames x 2x2 CTUs of 128 (176x144, edge CTUs partial)


@pytest.fixture(scope="module")
def reference(carphone_yuv, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    r = _make(carphone_yuv, out, "--jobs", "1")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.slow
def test_local_cluster_equals_one_job(reference, carphone_yuv, tmp_path):
    out = tmp_path / "dask.h5"
    r = _make(carphone_yuv, out, "--dask", "local:2")
    assert r.returncode == 0, r.stderr
    assert "speed-up" in r.stdout and r.stdout.count("worker tcp://") == 2, r.stdout
    assert not (tmp_path / "dask.h5.parts").exists()
    _assert_same_dataset(reference, out)


@pytest.mark.slow
def test_worker_killed_mid_unit_gives_the_same_dataset(reference, carphone_yuv, tmp_path):
    """A worker process is SIGKILLed while it runs an encode: Dask restarts it and reschedules the unit."""
    from distributed import Client, LocalCluster

    out = tmp_path / "killed.h5"
    work = tmp_path / "killed.h5.parts" / "work"
    killed = {}
    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        stop = threading.Event()

        def killer():
            while not stop.is_set():  # the first unit has started once its work folder appears
                if work.is_dir() and any(work.iterdir()):
                    busy = {w: ks for w, ks in client.processing().items() if any("codecnn-unit" in k for k in ks)}
                    if busy:
                        w = sorted(busy)[0]
                        pid = client.run(os.getpid, workers=[w])[w]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(worker=w, pid=pid, keys=busy[w])
                        return
                time.sleep(0.005)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        try:
            r = _make(carphone_yuv, out, "--dask", cluster.scheduler_address, timeout=90)
        finally:
            stop.set()
            t.join(10)
    assert killed, "no worker was seen running a unit"
    assert r.returncode == 0, r.stderr
    assert f"worker {killed['worker']}:" not in r.stdout, r.stdout  # its unit was finished by another worker
    _assert_same_dataset(reference, out)


@pytest.mark.slow
def test_resume_on_the_cluster_keeps_finished_shards(carphone_yuv, tmp_path):
    """A --jobs 1 build killed after its first shard, resumed with --dask local:2: the finished shard is kept
    (the resume reports it done) and the result equals an uninterrupted build."""
    slow = ["--size", "176x144", "--frames", "8", "--qp", "27", "--qp", "32", "--qp", "37", "--preset", "placebo"]
    full = tmp_path / "full.h5"
    assert _make(carphone_yuv, full, fast=slow).returncode == 0
    out = tmp_path / "part.h5"
    shard = tmp_path / "part.h5.parts" / "unit0000.h5"
    p = subprocess.Popen(_cmd(carphone_yuv, out, fast=slow), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not shard.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    p.kill()
    p.wait()
    if out.exists():
        pytest.skip("the build finished before it could be killed")
    r = _make(carphone_yuv, out, "--resume", "--dask", "local:2", "-v", fast=slow)
    assert r.returncode == 0, r.stderr
    assert "resuming: 1 of 3 encodes already done" in r.stderr or "resuming: 2 of 3" in r.stderr, r.stderr
    _assert_same_dataset(full, out, samples=3 * 8 * 4)


@dataclasses.dataclass(frozen=True)
class _Nap:
    """A stand-in unit: its picture size and QP give its expected cost (``unit_cost``), ``seconds`` its real one."""

    name: str
    info: types.SimpleNamespace
    qp: int
    seconds: float
    workdir: str


def _nap(u: _Nap) -> tuple[int, float, str]:
    start = time.time()
    time.sleep(u.seconds)
    return os.getpid(), start, u.name


def test_units_handed_out_longest_first_one_per_worker_thread(tmp_path):
    """Four units on two single-thread workers, given shortest first: they go out longest first, one per free
    worker thread, as a process pool hands them out (the longest-processing-time rule): the third longest
    goes to the worker that finished first, the shortest to the other. Handed to the scheduler all at once,
    two units are assigned to each worker up front (the first and the third to one of them)."""
    from codecnn.data.cluster import DaskRunner, unit_cost

    def unit(name, frames, seconds):
        info = types.SimpleNamespace(num_frames=frames, width=176, height=144)
        return _Nap(name, info, 32, seconds, str(tmp_path / name))

    units = [unit("d", 1, 0.6), unit("c", 2, 1.2), unit("b", 3, 1.8), unit("a", 4, 2.6)]
    assert [u.name for u in sorted(units, key=unit_cost, reverse=True)] == ["a", "b", "c", "d"]
    with DaskRunner("local:2") as runner:
        done = runner.run_all(_nap, units)
    assert [value[2] for _, _, value in done] == [u.name for u in units]  # results in the given order
    pid = {value[2]: value[0] for _, _, value in done}
    start = {value[2]: value[1] for _, _, value in done}
    assert pid["a"] != pid["b"] and pid["c"] == pid["b"] and pid["d"] == pid["a"]
    assert max(start["a"], start["b"]) < min(start["c"], start["d"])


def test_unreachable_scheduler_one_line_exit_2_nothing_written(carphone_yuv, tmp_path):
    t0 = time.monotonic()
    r = _make(carphone_yuv, "out.h5", "--dask", "tcp://127.0.0.1:1", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://127.0.0.1:1" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    assert list(tmp_path.iterdir()) == []
    assert time.monotonic() - t0 < 30


def test_dask_and_jobs_refused(carphone_yuv, tmp_path):
    r = _make(carphone_yuv, "out.h5", "--dask", "local:2", "--jobs", "2", cwd=tmp_path)
    assert r.returncode == 2 and "--dask and --jobs" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# evaluate --dask: the fresh encodes on the cluster, the filtering and measuring here

EVAL_FAST = ["--frames", "2", "--qp", "32", "--qp", "37", "--preset", "ultrafast", "--device", "cpu"]
EVAL_VOLATILE = {"created", "seconds", "path", "paths", "log"}


def _evaluate(checkpoint, yuv, out, *extra, cwd=None, timeout=300):
    cmd = [sys.executable, "-m", "codecnn", "evaluate", "--checkpoint", str(checkpoint), "--yuv", str(yuv)]
    cmd += [*EVAL_FAST, "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _figures(x):
    """results.json without timings, creation time and paths."""
    if isinstance(x, dict):
        return {k: _figures(v) for k, v in x.items() if k not in EVAL_VOLATILE and not k.endswith("seconds")}
    if isinstance(x, list):
        return [_figures(v) for v in x]
    return x


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "keep"), [([], False), (["--vs-loop-filters"], True)], ids=["plain-tempdir", "vs-loop-filters-work-dir"]
)
def test_evaluate_on_local_cluster_equals_in_process(checkpoint, carphone_yuv, tmp_path, extra, keep):
    """The same results.json figures with the encodes on a LocalCluster (in a temporary folder, or --work-dir)."""
    ref = _evaluate(checkpoint, carphone_yuv, tmp_path / "ref", *extra)
    assert ref.returncode == 0, ref.stderr
    work = tmp_path / "work"
    kept = ["--work-dir", str(work)] if keep else []
    r = _evaluate(checkpoint, carphone_yuv, tmp_path / "dask", "--dask", "local:2", *kept, *extra)
    assert r.returncode == 0, r.stderr
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "dask" / "results.json").read_text())
    assert _figures(a) == _figures(b)
    assert a["sequences"] and _figures(a["sequences"]) == _figures(b["sequences"])
    if keep:  # the workers' encodes, the anchor's beside them
        assert any(p.name.startswith("carphone_176x144_30_qp37") for p in work.iterdir())
        assert any(p.name.startswith("carphone_176x144_30_qp32") for p in (work / "anchor").iterdir())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "x.h5"], "nothing to encode"),
        (["--dask", "tcp://127.0.0.1:1"], "--work-dir"),
        (["--dask", "local:0"], "local:N"),
    ],
    ids=["data", "remote-without-work-dir", "bad-address"],
)
def test_evaluate_dask_refusals_one_line(checkpoint, carphone_yuv, tmp_path, extra, message):
    if extra[0] == "--data":
        extra = [*extra, "--dask", "local:2"]
        cmd = [sys.executable, "-m", "codecnn", "evaluate", "--checkpoint", str(checkpoint), *extra, "--out", "o"]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    else:
        r = _evaluate(checkpoint, carphone_yuv, "o", *extra, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
