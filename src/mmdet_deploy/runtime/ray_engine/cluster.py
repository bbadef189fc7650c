"""Ray for ``mmdet-run``: a loopback-only local Ray, or a bounded connection to a running cluster, and the
checks every node must pass before any file is scored.

* No ``--ray-address``: a private Ray is started on this machine (``address="local"``, never an instance
  found through ``RAY_ADDRESS`` or ``/tmp/ray``), bound to 127.0.0.1 (``_node_ip_address`` and, when ray is
  not imported yet, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, Ray's single-machine switch), without dashboard
  or usage statistics; :meth:`RaySession.close` stops it. Every address in ``ray.nodes()`` is checked to
  be 127.0.0.1.
* ``--ray-address ADDR``: the address is probed first, within ``connect_timeout`` seconds (a TCP connect,
  then ``ray.init`` in a child process that is killed when it does not answer: ``ray.init`` itself retries
  an unreachable address for minutes). An unreachable address is one :class:`UsageError` line (exit 2).
* :func:`check_nodes`: a tiny task pinned to every alive node checks that the model (and any other
  artefact) is there with the driver's sha256, that the first input file is readable and that the node runs
  the same mmdet-deploy; a node that fails is named in one error before any scoring.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from mmdet_deploy.deps import require
from mmdet_deploy.errors import MMDetError, UsageError, one_line

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Set before ray is imported for a local Ray: Ray's single-machine mode advertises 127.0.0.1 only.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: Set (unless the user chose otherwise) before any Ray is started from this process.
DEFAULT_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
#: Namespace of the driver's Ray job (actors of other jobs are never touched).
NAMESPACE = "mmdet-deploy"

#: Child process that answers whether ``ray.init(address=...)`` succeeds (it is killed after the timeout).
_PROBE = (
    "import logging, sys\n"
    "import ray\n"
    "ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)\n"
    "print(len([n for n in ray.nodes() if n['Alive']]))\n"
    "ray.shutdown()\n"
)


def check_options(config: Any) -> None:
    """:class:`UsageError` for out-of-range ``ray_*`` fields of a :class:`~mmdet_deploy.runtime.run.RunConfig`."""
    max_in_flight = 1 if config.ray_max_in_flight is None else config.ray_max_in_flight
    for flag, value, least in (("--ray-actors", config.ray_actors, 1), ("--ray-retries", config.ray_retries, 0),
                               ("--ray-gpus-per-actor", config.ray_gpus_per_actor, 0),
                               ("--ray-cpus-per-actor", config.ray_cpus_per_actor, 0),
                               ("--ray-max-in-flight", max_in_flight, 1)):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    for flag, value in (("--ray-cpus-per-task", config.ray_cpus_per_task),
                        ("--ray-connect-timeout", config.ray_connect_timeout)):
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if config.ray_address is not None and not config.ray_address.strip():
        raise UsageError("--ray-address is empty; leave it out to start a local Ray")


def import_ray(local: bool) -> ModuleType:
    """Import ray (naming the ``ray`` extra when it is missing) with the loopback settings of a local Ray."""
    if local and "ray" not in sys.modules:
        os.environ.update(LOCAL_ENV)
    for key, value in DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    ray = require("ray", "--engine ray")
    require("ray.data", "--engine ray")
    return ray


def split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for ``auto`` and other forms."""
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or LOOPBACK, int(port)


def probe_address(address: str, timeout: float) -> None:
    """Raise :class:`UsageError` (one line) unless a Ray cluster answers at ``address`` within ``timeout`` s."""
    where = split_address(address)
    if where is not None:
        try:
            with socket.create_connection(where, timeout=min(timeout, 10.0)):
                pass
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"--ray-address {address}: cannot reach a Ray cluster ({reason}); start one with "
                             "`ray start --head` or correct the address") from None
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                              timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        raise UsageError(f"--ray-address {address}: no Ray cluster answered within {timeout:g} s "
                         "(is it a Ray head's GCS port, usually 6379?)") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        last = lines[-1][:300] if lines else f"exit status {proc.returncode}"
        raise UsageError(f"--ray-address {address}: cannot connect to the Ray cluster ({last})")


class RaySession:
    """The Ray connection of one run: ``with RaySession(...) as ray: ...``.

    ``address`` None starts a private local Ray on loopback with ``num_cpus`` logical CPUs (stopped on
    exit); an address connects to that cluster (disconnected on exit). When this process is already
    connected (a Python caller ran ``ray.init`` itself) and no address is given, that connection is used
    and left open.
    """

    def __init__(self, address: str | None, *, num_cpus: int, connect_timeout: float, verbose: bool = False) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.connect_timeout = connect_timeout
        self.verbose = verbose
        self.ray: ModuleType | None = None
        self.started_local = False
        self._owns_connection = False

    def __enter__(self) -> ModuleType:
        ray = import_ray(local=self.address is None)
        self.ray = ray
        level = logging.INFO if self.verbose else logging.WARNING
        if self.address is None and ray.is_initialized():
            logger.info("using this process's existing Ray connection")
            return ray
        if self.address is None:
            ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, _node_ip_address=LOOPBACK,
                     namespace=NAMESPACE, log_to_driver=self.verbose, logging_level=level)
            self.started_local = self._owns_connection = True
            try:
                check_loopback(ray)
            except BaseException:
                self.close()
                raise
            return ray
        if ray.is_initialized():
            raise UsageError("--ray-address: this process is already connected to a Ray cluster; "
                             "call ray.shutdown() first or leave --ray-address out to use that connection")
        probe_address(self.address, self.connect_timeout)
        ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=self.verbose, logging_level=level)
        self._owns_connection = True
        return ray

    def close(self) -> None:
        """Stop the local Ray this session started, or disconnect from the cluster it connected to."""
        if self.ray is not None and self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_connection = False

    def __exit__(self, *exc: object) -> None:
        self.close()


def alive_nodes(ray: ModuleType) -> list[dict[str, Any]]:
    """``ray.nodes()`` entries of the nodes that are alive."""
    return [node for node in ray.nodes() if node.get("Alive")]


def check_loopback(ray: ModuleType) -> None:
    """Raise :class:`MMDetError` unless every alive node of the cluster advertises 127.0.0.1."""
    addresses = sorted({str(node.get("NodeManagerAddress")) for node in alive_nodes(ray)})
    if addresses != [LOOPBACK]:
        raise MMDetError(f"the local Ray is not on loopback only: its nodes advertise {', '.join(addresses)}")


def cluster_resources(ray: ModuleType) -> dict[str, float]:
    """Total logical CPUs and GPUs of the alive nodes."""
    totals = {"CPU": 0.0, "GPU": 0.0}
    for node in alive_nodes(ray):
        for key in totals:
            totals[key] += float(node.get("Resources", {}).get(key, 0.0))
    return totals


def check_capacity(ray: ModuleType, actors: int, cpus_per_actor: float, gpus_per_actor: float,
                   cpus_per_task: float) -> None:
    """Refuse a pool that the cluster can never place (Ray Data would wait for it forever)."""
    totals = cluster_resources(ray)
    if gpus_per_actor > 0 and totals["GPU"] < actors * gpus_per_actor:
        raise UsageError(f"--ray-actors {actors} x --ray-gpus-per-actor {gpus_per_actor:g} needs "
                         f"{actors * gpus_per_actor:g} GPUs; the cluster has {totals['GPU']:g}")
    need = actors * cpus_per_actor + cpus_per_task
    if totals["CPU"] < need:
        raise UsageError(f"{actors} actor(s) x {cpus_per_actor:g} CPU plus one decode task of {cpus_per_task:g} "
                         f"CPU need {need:g} CPUs; the cluster has {totals['CPU']:g}")


def node_check(artefacts: Sequence[tuple[str, str]], readable: Sequence[str], decode: Any = None) -> dict[str, Any]:
    """Runs on one node: which artefacts (path, sha256) are missing or differ, which inputs cannot be read,
    and, with ``decode`` = (RunConfig, ModelContract), whether the run's preprocessing can be built there."""
    import mmdet_deploy
    from mmdet_deploy.fileio import sha256_file

    problems: list[str] = []
    for path, expected in artefacts:
        try:
            actual = sha256_file(path)
        except OSError as exc:
            problems.append(f"cannot read {path} ({exc.strerror or type(exc).__name__})")
            continue
        if actual != expected:
            problems.append(f"{path} differs from the driver's copy (sha256 {actual[:12]} vs {expected[:12]})")
    for path in readable:
        if not os.access(path, os.R_OK):
            problems.append(f"cannot read the input {path}")
    if decode is not None:
        from mmdet_deploy.runtime.run import build_preprocessor

        try:
            build_preprocessor(*decode)
        except MMDetError as exc:
            problems.append(f"cannot build the preprocessing ({exc})")
    return {"problems": problems, "version": mmdet_deploy.__version__, "host": socket.gethostname()}


def check_nodes(ray: ModuleType, artefacts: Mapping[str, str], readable: Sequence[str], timeout: float,
                decode: Any = None) -> int:
    """Run :func:`node_check` on every alive node; :class:`UsageError` naming each node that fails.

    ``artefacts`` maps absolute paths to the sha256 the driver computed; ``readable`` lists input files every
    node must be able to open; ``decode`` is passed on. Returns the number of nodes.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import mmdet_deploy

    task = ray.remote(node_check)
    nodes = alive_nodes(ray)
    refs = [task.options(num_cpus=0, max_retries=1, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(sorted(artefacts.items()), list(readable), decode) for node in nodes]
    failures: list[str] = []
    for node, ref in zip(nodes, refs, strict=True):
        where = f"node {node.get('NodeManagerAddress')} ({str(node['NodeID'])[:8]})"
        try:
            report = ray.get(ref, timeout=timeout)
        except Exception as exc:  # a node that cannot even run the check (no mmdet-deploy, dead, too slow)
            failures.append(f"{where}: the check task failed ({type(exc).__name__}: {remote_error(exc)})")
            continue
        problems = list(report["problems"])
        if report["version"] != mmdet_deploy.__version__:
            problems.append(f"runs mmdet-deploy {report['version']}, the driver {mmdet_deploy.__version__}")
        failures.extend(f"{where}: {problem}" for problem in problems)
    if failures:
        raise UsageError("not every Ray node can run this job (put the model on storage every node mounts at "
                         "the same path, see README 'On a cluster'): " + "; ".join(failures))
    return len(nodes)


def remote_error(exc: BaseException) -> str:
    """A Ray error as one line: the remote exception's message (Ray's own text is a whole remote traceback),
    through the runtime's :func:`~mmdet_deploy.errors.one_line`."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return one_line(first or type(exc).__name__, limit=200)
