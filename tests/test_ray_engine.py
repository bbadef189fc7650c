"""``--engine ray`` on a real two-node Ray cluster on loopback (``ray.cluster_utils.Cluster``, the utility Ray's
own tests use): the local engine's rows on the bad-input folder, an actor killed with SIGKILL, a decoder that
segfaults, a killed driver then ``--resume``, pre-flight checks, and loopback only. Every Ray process a test
starts is stopped through its own handle (the cluster object, the driver's ``ray.shutdown``, a Popen).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmdet_deploy.contract import ModelContract
from mmdet_deploy.deps import available
from mmdet_deploy.errors import UsageError
from mmdet_deploy.runtime import RunConfig, run_folder
from mmdet_deploy.runtime.ray_engine.cluster import LOOPBACK, check_capacity, check_nodes, import_ray
from mmdet_deploy.runtime.ray_engine.stages import CRASH_ENV
from mmdet_deploy.runtime.results import ResultRow, load_results
from runtime_fixtures import build_synthetic_model, write_bad_folder

if not available("ray"):
    pytest.skip("ray is not installed (pip install 'mmdet-deploy[ray]')", allow_module_level=True)
ray = import_ray(local=True)  # before anything imports ray: Ray's single-machine mode, 127.0.0.1 only
psutil = pytest.importorskip("psutil")

SRC = Path(__file__).resolve().parents[1] / "src"
LAUNCH = "import sys; from mmdet_deploy.cli.run import main; sys.argv[0] = 'mmdet-run'; main()"
LOOPBACK_IPS = {LOOPBACK, "::ffff:127.0.0.1"}
runner = CliRunner()


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """No test here may hang: SIGALRM fails it after 240 s (ray.get and the Ray Data iterator honour signals)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("the test ran past its 240 s limit (a hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(240)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two Ray nodes of 2 logical CPUs each on 127.0.0.1, shut down through this handle at the end."""
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK, include_dashboard=False, object_store_memory=200 << 20)
        cluster.add_node(num_cpus=2, node_ip_address=LOOPBACK, object_store_memory=200 << 20)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model(tmp_path_factory.mktemp("model") / "synthetic.onnx",
                                 ModelContract(config="tiny", preset="frames"))


def colour_folder(root: Path, count: int) -> Path:
    """``count`` flat images from red (reads fake) to blue (reads real): every file a different p(fake)."""
    root.mkdir(parents=True)
    for i in range(count):
        red = int(250 * (count - 1 - i) / max(1, count - 1))
        Image.new("RGB", (64, 48), (red, 40, 250 - red)).save(root / f"img {i:02d}.png")
    return root


def assert_same_rows(ray_rows: list[ResultRow], local_rows: list[ResultRow], skip: tuple[str, ...] = ()) -> None:
    """Same files, once each, with the same status, label, reason, counts and p(fake) within 1e-5."""
    names = [r.filename for r in ray_rows]
    assert len(names) == len(set(names)), "a file has two rows"
    got = {r.filename: r for r in ray_rows if r.filename not in skip}
    want = {r.filename: r for r in local_rows if r.filename not in skip}
    assert got.keys() == want.keys()
    for name, row in got.items():
        ref = want[name]
        fields = ("status", "label", "reason", "kind", "frames", "windows", "detector", "frames_without_face")
        assert [getattr(row, f) for f in fields] == [getattr(ref, f) for f in fields], name
        if ref.prob_fake is None:
            assert row.prob_fake is None, name
        else:
            assert row.prob_fake is not None and abs(row.prob_fake - ref.prob_fake) <= 1e-5, name


def descendants(pids: list[int]) -> list[Any]:
    procs = []
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            procs += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    return procs


def command_line(proc: Any) -> str:
    """A process's command line, empty once it is gone (processes come and go while a run is watched)."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def listening_ips(procs: list[Any]) -> set[str]:
    ips = set()
    for proc in procs:
        try:
            ips |= {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return ips


def cluster_pids(cluster: Any) -> list[int]:
    """Process ids of every Ray process our cluster object started (GCS, raylets, agents...)."""
    pids = []
    for node in [cluster.head_node, *cluster.worker_nodes]:
        for infos in node.all_processes.values():
            pids += [info.process.pid for info in infos]
    return pids


# -- local mode --------------------------------------------------------------------------------------------------
def test_local_mode_starts_a_private_loopback_ray_and_stops_it(model: Path, tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "in", 3)
    seen: dict[str, Any] = {}
    # Children of this process from before the run (e.g. multiprocessing's resource tracker) are not Ray's.
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    def inspect(row: ResultRow) -> None:  # runs in the driver while the local Ray is up
        if not seen:
            procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
            seen["addresses"] = {n["NodeManagerAddress"] for n in ray.nodes()}
            seen["listening"] = listening_ips(procs)
            seen["procs"] = procs

    summary = run_folder(RunConfig(root, model, tmp_path / "out", engine="ray"), progress=inspect)
    assert summary.exit_code == 0 and summary.counts["ok"] == 3
    assert seen["addresses"] == {LOOPBACK}  # every node of ray.nodes()
    assert seen["listening"] and seen["listening"] <= LOOPBACK_IPS  # and every listening socket: loopback only
    assert not ray.is_initialized()  # the engine stopped the Ray it started...
    gone, alive = psutil.wait_procs(seen["procs"], timeout=20)
    assert not alive, [(p.pid, " ".join(p.cmdline())[:200]) for p in alive]  # ...and every process of it is gone
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["ray"]["address"] == "local"


# -- on the two-node cluster -------------------------------------------------------------------------------------
def test_cluster_is_loopback_only_and_preflight_checks_name_the_nodes(cluster: Any, model: Path,
                                                                      tmp_path: Path) -> None:
    assert listening_ips(descendants(cluster_pids(cluster))) <= LOOPBACK_IPS
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {LOOPBACK}
        from mmdet_deploy.fileio import sha256_file

        assert check_nodes(ray, {str(model): sha256_file(model)}, [str(model)], timeout=120) == 2
        with pytest.raises(UsageError) as missing:
            check_nodes(ray, {str(tmp_path / "gone.onnx"): "0" * 64}, [], timeout=120)
        message = str(missing.value)
        assert message.count("cannot read") == 2 and "gone.onnx" in message and "\n" not in message
        assert all(str(n["NodeID"])[:8] in message for n in nodes)  # each node named
        with pytest.raises(UsageError, match="differs from the driver's copy"):
            check_nodes(ray, {str(model): "f" * 64}, [], timeout=120)
        with pytest.raises(UsageError, match="needs 2 GPUs; the cluster has 0"):
            check_capacity(ray, 2, 1.0, 1.0, 1.0)
        with pytest.raises(UsageError, match="need 7 CPUs; the cluster has 4"):
            check_capacity(ray, 3, 2.0, 0.0, 1.0)
    finally:
        ray.shutdown()


def test_bad_input_folder_gives_the_local_engines_rows(cluster: Any, model: Path, tmp_path: Path) -> None:
    from mmdet_deploy.cli.run import app

    bad = write_bad_folder(tmp_path / "bad in")
    options = ["--preset", "faces", "--face-detectors", "haar", "--save-crops", "-q"]
    result = runner.invoke(app, [str(bad), "--model", str(model), "--out", str(tmp_path / "ray"), "--engine", "ray",
                                 "--ray-address", cluster.address, "--ray-actors", "2", *options])
    assert result.exit_code == 1, result.output  # some files cannot be scored, as with the local engine
    local = runner.invoke(app, [str(bad), "--model", str(model), "--out", str(tmp_path / "local"), *options])
    assert local.exit_code == 1, local.output
    ray_rows, local_rows = load_results(tmp_path / "ray" / "results.csv"), load_results(tmp_path / "local" /
                                                                                        "results.csv")
    assert len(ray_rows) == 10 and {r.status for r in ray_rows} == {"ok", "no_face", "error", "skipped"}
    assert_same_rows(ray_rows, local_rows)
    for name in ("results.csv", "predictions.csv", "run.json", "summary.json"):
        assert (tmp_path / "ray" / name).is_file()
    with open(tmp_path / "ray" / "predictions.csv", encoding="utf-8", newline="") as a, \
            open(tmp_path / "local" / "predictions.csv", encoding="utf-8", newline="") as b:
        assert sorted(csv.reader(a)) == sorted(csv.reader(b))
    for table in ("faces.csv",):  # the per-frame records travel with each file, its crops come back
        assert sorted((tmp_path / "ray" / table).read_text().splitlines()) == \
            sorted((tmp_path / "local" / table).read_text().splitlines())
    def crops(out: Path) -> dict[Path, bytes]:
        return {p.relative_to(out): p.read_bytes() for p in (out / "crops").rglob("*") if p.is_file()}

    assert crops(tmp_path / "local") and crops(tmp_path / "ray") == crops(tmp_path / "local")
    report = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert report["engine"] == "ray" and report["ray"]["nodes"] == 2 and report["counts"]["error"] == 6
    manifest = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert manifest["engine"] == "ray" and manifest["face_detectors"] == ["haar"]


def test_sigkilled_actor_and_crashing_decoder_cost_no_row(cluster: Any, model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root = colour_folder(tmp_path / "in", 36)
    Image.new("RGB", (64, 48), (200, 0, 0)).save(root / "crash me.png")  # its decoder segfaults, every attempt
    Image.new("RGB", (64, 48), (0, 0, 200)).save(root / "flaky.png")  # its worker is SIGKILLed once
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(CRASH_ENV, f"SIGSEGV:crash*;SIGKILL:flaky*:{markers}")
    raylets = [n.all_processes["raylet"][0].process.pid for n in [cluster.head_node, *cluster.worker_nodes]]
    killed: list[int] = []
    seen: set[int] = set()
    nodes_with_actors: set[int] = set()
    running = threading.Event()
    running.set()

    def watch() -> None:  # kill one actor as soon as both run, then watch Ray bring a new one up
        while running.is_set():
            actors = []
            for node, raylet in enumerate(raylets):
                here = [p for p in descendants([raylet]) if "InferenceActor" in command_line(p)]
                nodes_with_actors.update([node] if here else [])
                actors += here
            seen.update(p.pid for p in actors)
            if not killed and len(actors) == 2:
                try:
                    actors[0].send_signal(signal.SIGKILL)
                    killed.append(actors[0].pid)
                except psutil.Error:
                    pass  # it went away on its own in the meantime: try again on the next look
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    config = RunConfig(root, model, tmp_path / "ray", engine="ray", ray_address=cluster.address, ray_actors=2,
                       batch_size=1, ray_max_in_flight=1, ray_retries=2)
    try:
        summary = run_folder(config)
    finally:
        running.clear()
        watcher.join()
    assert killed, "the actors never ran side by side; nothing was killed"
    rows = load_results(tmp_path / "ray" / "results.csv")
    by_name = {r.filename: r for r in rows}
    assert len(rows) == len(by_name) == 38 and summary.exit_code == 1
    assert by_name["crash me.png"].status == "error" and "died on all 3 attempts" in by_name["crash me.png"].reason
    assert by_name["flaky.png"].status == "ok" and (markers / "flaky.png.crashed").is_file()
    actors = json.loads((tmp_path / "ray" / "summary.json").read_text())["ray"]["windows_by_actor"]
    scored_by = {int(tag.split(":")[1]) for tag in actors}
    assert len(seen | scored_by) >= 3, f"Ray brought no actor up after the kill (seen {seen}, scored {actors})"
    # The pool spread over both nodes. Ray may place the replacement of the killed actor beside the survivor,
    # and the killed one may have scored nothing yet, so the nodes are those that ran an actor at any time.
    scoring_nodes = {tag.split(":")[0] for tag in actors}
    assert len(nodes_with_actors) == 2 or len(scoring_nodes) == 2, (nodes_with_actors, actors)
    assert sum(actors.values()) == 37  # every scored window counted once
    monkeypatch.delenv(CRASH_ENV)
    local = run_folder(RunConfig(root, model, tmp_path / "local", batch_size=2, workers=1))
    assert local.exit_code == 0
    assert_same_rows(rows, load_results(tmp_path / "local" / "results.csv"), skip=("crash me.png",))


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
def test_killed_driver_then_resume_gives_every_file_one_row(cluster: Any, model: Path, tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "in", 30)
    out = tmp_path / "ray"
    args = [str(root), "--model", str(model), "--out", str(out), "--engine", "ray", "--ray-address",
            cluster.address, "--batch-size", "1", "--ray-max-in-flight", "1", "-q"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, stderr=subprocess.PIPE)
    results = out / "results.csv"
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline:
            if results.exists() and results.read_bytes().count(b"\n") >= 6:
                break
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    before = load_results(results)
    assert 5 <= len(before) < 30
    with open(results, "a", encoding="utf-8") as handle:
        handle.write("img 99.png,1,0.5")  # what a kill in the middle of a write leaves
    resumed = run_folder(RunConfig(root, model, out, engine="ray", ray_address=cluster.address, resume=True))
    assert resumed.exit_code == 0 and resumed.previous_rows == len(before)
    after = load_results(results)
    assert after[: len(before)] == before  # earlier rows untouched
    assert run_folder(RunConfig(root, model, tmp_path / "local", workers=1)).exit_code == 0
    assert_same_rows(after, load_results(tmp_path / "local" / "results.csv"))
    assert len(after) == 30 and "img 99.png" not in {r.filename for r in after}


# -- bad command lines and environments (no cluster) --------------------------------------------------------------
def test_unreachable_or_foreign_address_is_one_line_exit_2(model: Path, tmp_path: Path) -> None:
    from mmdet_deploy.cli.run import app

    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "in" / "a.png")
    closed = socket.socket()
    closed.bind((LOOPBACK, 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    base = [str(tmp_path / "in"), "--model", str(model), "--out", str(tmp_path / "out"), "--engine", "ray", "-q"]
    result = runner.invoke(app, [*base, "--ray-address", f"{LOOPBACK}:{port}"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot reach a Ray cluster" in lines[0], result.output
    with socket.socket() as silent:  # accepts connections, never speaks Ray
        silent.bind((LOOPBACK, 0))
        silent.listen()
        t0 = time.monotonic()
        result = runner.invoke(app, [*base, "--ray-address", f"{LOOPBACK}:{silent.getsockname()[1]}",
                                     "--ray-connect-timeout", "3"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "no Ray cluster answered within 3 s" in lines[0], lines
    assert time.monotonic() - t0 < 30  # bounded: ray.init alone would retry for minutes
    assert not (tmp_path / "out").exists()


def test_ray_options_need_the_ray_engine(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--ray-address, --ray-actors only apply to --engine ray"):
        RunConfig(tmp_path, tmp_path / "m.onnx", tmp_path / "o", ray_address="x:1", ray_actors=2)
    for options, message in (({"engine": "spark"}, "unknown engine"), ({"ray_actors": 0}, "--ray-actors must be"),
                             ({"ray_max_in_flight": 0}, "--ray-max-in-flight must be"),
                             ({"ray_cpus_per_task": 0}, "--ray-cpus-per-task must be positive"),
                             ({"ray_address": " "}, "--ray-address is empty")):
        with pytest.raises(UsageError, match=message):
            RunConfig(tmp_path, tmp_path / "m.onnx", tmp_path / "o", **{"engine": "ray", **options})


def test_without_ray_the_error_names_the_extra(model: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ray is blocked for this test')\n", encoding="utf-8")
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "in" / "a.png")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "blocker"), str(SRC)]))
    args = [str(tmp_path / "in"), "--model", str(model), "-q"]
    ray_run = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--out", str(tmp_path / "r"), "--engine", "ray"],
                             env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in ray_run.stderr.splitlines() if line.strip()]
    assert ray_run.returncode == 1 and len(lines) == 1 and "pip install 'mmdet-deploy[ray]'" in lines[0], lines
    local_run = subprocess.run([sys.executable, "-c", LAUNCH, *args, "--out", str(tmp_path / "l")], env=env,
                               capture_output=True, text=True, timeout=120)
    assert local_run.returncode == 0, local_run.stderr  # the local engine never needs ray


def test_cli_refuses_ray_flags_without_the_ray_engine_and_bad_bench_options(model: Path, tmp_path: Path) -> None:
    from mmdet_deploy.benchmarks.engines import cases_for
    from mmdet_deploy.cli.bench import app as bench_app
    from mmdet_deploy.cli.run import app

    result = runner.invoke(app, [str(tmp_path), "--model", str(model), "--out", str(tmp_path / "o"),
                                 "--ray-actors", "2"])
    assert result.exit_code == 2 and "--ray-actors only apply to --engine ray" in result.output
    result = runner.invoke(bench_app, ["ray", "--model", str(model), "--out", str(tmp_path / "b"), "--actors", "0"])
    assert result.exit_code == 2 and "--actors '0'" in result.output and not (tmp_path / "b").exists()
    assert [(c.name, c.actors, c.threads) for c in cases_for((1, 2), cores=2)] == [
        ("local", 1, 0), ("ray_1", 1, 2), ("ray_2", 2, 1)]
