"""``--executor dask``: the same bytes as the local executor on a LocalCluster of two worker
processes, a worker killed mid-run retried without lost or doubled records, a clear line
for an unreachable scheduler or a missing Dask."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers import leftovers, mnist_files, run_dataprep, tree_bytes, write_images

from dataprep.parallel import local_cluster
from dataprep.stores import open_store

pytest.importorskip("dask.distributed")  # the test extra installs it; the dask extra for users


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    folder = tmp_path_factory.mktemp("dask")
    r = CliRunner().invoke(
        cli,
        [
            "noise",
            "--n",
            "120",
            "--size",
            "24x24",
            "--classes",
            "3",
            "--out",
            str(folder / "samples"),
            "--format",
            "png",
            "-j",
            "1",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.stderr
    mnist_files(folder / "mnist", n=40)
    return folder


@pytest.fixture(scope="module")
def store(images):
    """An LMDB of the images, for the commands that read a store in the workers."""
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    r = CliRunner().invoke(cli, ["lmdb", str(images / "train.txt"), str(images / "db"), "-j", "1"])
    assert r.exit_code == 0, r.stderr
    return images / "db"


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 workers (as --executor dask starts one), started in this folder."""
    with local_cluster(2) as running:
        yield running


@pytest.mark.parametrize(
    "command",
    [
        ("noise", "--n", 90, "--size", "16x16", "--to", "hdf5", "--out", "{out}"),
        (
            "noise",
            "--n",
            60,
            "--size",
            "16x16",
            "--format",
            "png",
            "--out",
            "{out}/samples",
            "--lists-dir",
            "{out}",
        ),
        ("lmdb", "{list}", "{out}/db", "--resize", "20x20"),
        ("wds", "{list}", "{out}/shards", "--shard-size", 25),
        ("hdf5", "{list}", "--out", "{out}/train.h5", "--mean", 128),
        ("resize", "{list}", "{out}/small", "--size", "12x12"),
        ("augment", "{list}", "{out}/aug", "--crop", "20x20", "--copies", 2, "--mirror", "--seed", 3),
        ("mean", "{list}", "-o", "{out}/mean.binaryproto"),
        ("mean", "{store}", "-o", "{out}/mean.binaryproto"),
        ("convert", "{store}", "{out}/train.h5", "--to", "hdf5"),
        ("import", "mnist", "{mnist}", "{out}", "--to", "lmdb"),
        ("import", "mnist", "{mnist}", "{out}", "--to", "files"),
    ],
    ids=[
        "noise-hdf5",
        "noise-files",
        "lmdb",
        "wds",
        "hdf5",
        "resize",
        "augment",
        "mean",
        "mean-store",
        "convert",
        "import-lmdb",
        "import-files",
    ],
)
def test_dask_gives_the_local_executors_bytes(invoke, images, store, cluster, tmp_path, monkeypatch, command):
    # run from another folder than the workers', with relative paths: what a worker is
    # sent must not depend on the client's working directory
    monkeypatch.chdir(tmp_path)
    where = {
        "list": os.path.relpath(images / "train.txt"),
        "store": os.path.relpath(store),
        "mnist": os.path.relpath(images / "mnist"),
    }
    outputs = {}
    for executor, extra in (("local", ["-j", 2]), ("dask", ["--scheduler", cluster.scheduler_address])):
        Path(executor).mkdir()
        args = [str(a).format(out=executor, **where) for a in command]
        r = invoke(*args, "--executor", executor, *extra)
        assert r.exit_code == 0, r.stderr
        outputs[executor] = {
            k: v.replace(str(tmp_path / executor).encode(), b"OUT") for k, v in tree_bytes(executor).items()
        }
    assert outputs["dask"] == outputs["local"] and outputs["local"]


def test_a_worker_killed_mid_run_is_retried_without_lost_or_doubled_records(invoke, images, tmp_path):
    from dask.distributed import Client

    with local_cluster(2) as cluster:
        with Client(cluster) as client:
            pids = list(client.run(os.getpid).values())

            def kill_one() -> None:  # once the conversion is under way
                deadline = time.monotonic() + 60
                while not list(tmp_path.glob(".db.partial-*")) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.3)
                os.kill(pids[0], 9)

            killer = threading.Thread(target=kill_one)
            killer.start()
            r = invoke(
                "lmdb",
                images / "train.txt",
                tmp_path / "db",
                "--resize",
                "160x160",
                "--executor",
                "dask",
                "--scheduler",
                cluster.scheduler_address,
            )
            killer.join()
            assert r.exit_code == 0, r.stderr
            assert pids[0] not in client.run(os.getpid, on_error="ignore").values()  # that worker really died
    with open_store(tmp_path / "db") as store:
        keys = store.keys()
    lines = (images / "train.txt").read_text().splitlines()
    assert keys == [f"{i:08d}_{line.split()[0]}" for i, line in enumerate(lines)]
    assert invoke("verify", tmp_path / "db", "--list", images / "train.txt").exit_code == 0


@pytest.mark.parametrize("direct", [None, False])
def test_results_come_straight_from_the_workers_unless_dasks_setting_says_otherwise(
    invoke, images, tmp_path, direct
):
    # Dask's default sends every result through the scheduler (each byte moved twice);
    # the client reads from the workers unless distributed.client.direct-to-workers is False
    import dask.config

    with local_cluster(1) as cluster:
        served = []
        gather = cluster.scheduler.handlers["gather"]

        async def counted(*args, **kwargs):
            served.append(kwargs.get("keys"))
            return await gather(*args, **kwargs)

        cluster.scheduler.handlers["gather"] = counted
        with dask.config.set({"distributed.client.direct-to-workers": direct}):
            r = invoke(
                "lmdb",
                images / "train.txt",
                tmp_path / "db",
                "--executor",
                "dask",
                "--scheduler",
                cluster.scheduler_address,
            )
        assert r.exit_code == 0, r.stderr
    assert bool(served) == (direct is False)
    with open_store(tmp_path / "db") as store:
        assert len(store) == len((images / "train.txt").read_text().splitlines())


def test_a_bad_image_under_dask_is_one_line(images, cluster, tmp_path):
    # the error stops the command while chunks are in flight; nothing else may reach stderr
    # (the map used to cancel them after the client had closed: "IOLoop is closed")
    lines = (images / "train.txt").read_text().splitlines()
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(["missing.png 0", *(f"{images}/{line}" for line in lines)]) + "\n")
    r = run_dataprep(
        "lmdb", bad, tmp_path / "db", "--executor", "dask", "--scheduler", cluster.scheduler_address
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"Error: {bad}:1: missing.png: cannot read image (No such file or directory)"
    ]
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("when", ["cluster start-up", "mid-run"])
def test_ctrl_c_under_dask_is_exit_130_with_nothing_left(tmp_path, when):
    # a Ctrl-C while the command's own LocalCluster starts is taken once it is up; either
    # way the cluster is closed before the quick exit: no partial store, no process left,
    # and nothing after "Interrupted." (such as "leaked semaphore objects")
    import signal
    import subprocess
    import sys

    import psutil

    list_path, _ = write_images(tmp_path, 3000, shape=(32, 32, 3))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", "lmdb", str(list_path), str(tmp_path / "db")]
        + ["--resize", "200x200", "--executor", "dask", "-j", "2"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    started = False
    while not started:
        assert proc.poll() is None and time.monotonic() < deadline, "finished before it could be interrupted"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        # the store is staged before the cluster starts; mid-run: its 2 workers are up (and
        # multiprocessing's resource tracker), and then the work has run for a while
        started = list(tmp_path.glob(".db.partial-*")) and (when != "mid-run" or len(descendants) >= 3)
        time.sleep(0.01)
    if when == "mid-run":
        time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "Interrupted.", err
    assert leftovers(tmp_path) == [] and not (tmp_path / "db").exists()
    deadline = time.monotonic() + 10  # the cluster's processes end with the command
    while [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
        assert time.monotonic() < deadline, f"{descendants} outlived the command"
        time.sleep(0.05)


def test_a_scheduler_without_workers_is_waited_on_with_a_line(images, tmp_path):
    # a SLURM cluster whose worker jobs are still queued: say so, wait, go on when one joins
    import subprocess
    import sys

    with local_cluster(0) as cluster:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataprep.cli.main",
                "lmdb",
                str(images / "train.txt"),
                str(tmp_path / "db"),
            ]
            + ["--executor", "dask", "--scheduler", cluster.scheduler_address],
            stderr=subprocess.PIPE,
            text=True,
        )
        line = proc.stderr.readline()
        assert line.strip() == (
            f"INFO: no Dask worker at {cluster.scheduler_address} yet: waiting for one to join (Ctrl-C stops)"
        )
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting
        cluster.scale(1)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    with open_store(tmp_path / "db") as store:
        assert len(store) == len((images / "train.txt").read_text().splitlines())


def test_chunks_in_flight_follow_a_cluster_that_grows(monkeypatch):
    from helpers import Square

    from dataprep.parallel import DaskExecutor, ordered_map

    monkeypatch.setattr(DaskExecutor, "RECOUNT_SECONDS", 0.2)
    with local_cluster(1) as cluster:
        executor = DaskExecutor(cluster.scheduler_address)
        try:
            assert executor.workers == 1
            results = ordered_map(Square(delay=0.05), 400, executor, chunk_size=4)
            first = [next(results) for _ in range(8)]
            cluster.scale(2)
            cluster.wait_for_workers(2)
            rest = list(results)
            assert executor.workers == 2  # counted again mid-run: 8 chunks in flight, not 4
            assert [r[:2] for r in first + rest] == [(i, i * i) for i in range(400)]
            assert len({pid for *_, pid in rest}) == 2  # the new worker took chunks
        finally:
            executor.close()


def test_an_unreachable_scheduler_is_one_line(invoke, images, tmp_path):
    started = time.monotonic()
    r = invoke(
        "lmdb",
        images / "train.txt",
        tmp_path / "db",
        "--executor",
        "dask",
        "--scheduler",
        "tcp://127.0.0.1:9",
    )
    assert r.exit_code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30
    assert not (tmp_path / "db").exists() and leftovers(tmp_path) == []


def test_without_dask_the_message_says_how_to_install(invoke, images, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    r = invoke("lmdb", images / "train.txt", tmp_path / "db", "--executor", "dask")
    # an environment problem (1), and the line that fits this install: a clone, editable
    assert r.exit_code == 1 and "pip install -e '" in r.stderr and "[dask]'" in r.stderr
    assert "'dataprep[" not in r.stderr  # the unrelated package of that name


def test_the_executor_choice_ends_with_the_command(invoke, images, tmp_path):
    from dataprep.parallel import EXECUTOR, InlineExecutor, make_executor

    r = invoke("mean", images / "train.txt", "-o", tmp_path / "m.binaryproto", "--executor", "dask", "-j", 2)
    assert r.exit_code == 0, r.stderr
    assert EXECUTOR["kind"] == "local" and isinstance(make_executor(1), InlineExecutor)  # no cluster left


def test_max_pixels_reaches_the_dask_workers(images, cluster, tmp_path):
    """Set in the command's process, the limit travels with the chunks: Dask's workers (and
    a fork server's children) never saw it set."""
    r = run_dataprep(
        "lmdb",
        images / "train.txt",
        tmp_path / "db",
        "--max-pixels",
        10,
        "--color",  # no image decoded in this process to settle the channels
        "--executor",
        "dask",
        "--scheduler",
        cluster.scheduler_address,
    )
    assert r.returncode == 1 and "megapixels, over --max-pixels 10" in r.stderr, r.stderr
    assert not (tmp_path / "db").exists()


def _plain_cluster_lines() -> list[str]:
    text = (Path(__file__).parents[2] / "docs" / "cluster.md").read_text()
    block = text.split("<!-- plain-cluster -->", 1)[1].split("<!-- /plain-cluster -->", 1)[0]
    return [
        line.split("#")[0].strip() for line in block.splitlines() if line.startswith(("dask", "dataprep"))
    ]


def test_the_docs_plain_cluster_lines_run_and_a_lost_scheduler_is_one_line(images, tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on loopback, started with the
    docs' own lines (on a free port): the store equals a local run's; then the scheduler
    is killed mid-run: one line naming it, exit 1, nothing left."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = [line.replace("8786", str(port)).rstrip(" &") for line in _plain_cluster_lines()]
    assert [line.split()[:2] for line in lines] == [
        ["dask", "scheduler"],
        ["dask", "worker"],
        ["dask", "worker"],
        ["dataprep", "lmdb"],
    ]
    dask = str(Path(sys.executable).parent / "dask")
    procs = [subprocess.Popen([dask, *line.split()[1:]], stderr=subprocess.DEVNULL) for line in lines[:3]]
    try:
        args = lines[3].split()[1:]
        args[1:3] = [str(images / "train.txt"), str(tmp_path / "train_lmdb")]
        r = run_dataprep(*args, timeout=120)
        assert r.returncode == 0, r.stderr
        local = run_dataprep("lmdb", images / "train.txt", tmp_path / "local_lmdb", "-j", 1)
        assert local.returncode == 0
        assert tree_bytes(tmp_path / "train_lmdb") == tree_bytes(tmp_path / "local_lmdb")
        many = images / "many.txt"  # long enough to lose the scheduler in the middle
        many.write_text((images / "train.txt").read_text() * 200)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataprep.cli.main",
                "lmdb",
                str(many),
                str(tmp_path / "lost_lmdb"),
                "--executor",
                "dask",
                "--scheduler",
                f"tcp://127.0.0.1:{port}",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60

        def written() -> int:  # disk blocks of the partial store: records are coming back
            return sum(p.stat().st_blocks for p in tmp_path.glob(".lost_lmdb.partial-*/data.mdb"))

        while written() < 1024:  # past LMDB's two meta pages: the first transaction's reserve
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.002)
        procs[0].send_signal(signal.SIGKILL)  # the scheduler
        _, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        lines_out = [line for line in err.strip().splitlines() if line.startswith("Error")]
        assert len(lines_out) == 1 and f"lost the Dask scheduler at tcp://127.0.0.1:{port}" in lines_out[0], (
            err
        )
        assert "Traceback" not in err
        assert not (tmp_path / "lost_lmdb").exists() and leftovers(tmp_path) == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_scheduler_address_without_its_port_is_a_usage_error_at_once(images, tmp_path):
    started = time.monotonic()
    r = run_dataprep(
        "lmdb", images / "train.txt", tmp_path / "db", "--executor", "dask", "--scheduler", "tcp://127.0.0.1"
    )
    assert r.returncode == 2 and "give a Dask scheduler address as tcp://HOST:PORT" in r.stderr
    assert time.monotonic() - started < 10 and "Traceback" not in r.stderr
