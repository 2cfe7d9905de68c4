"""Where an experiment's independent jobs run: one after another in this process, or fanned out on Ray.

Each stage of an experiment is a list of independent jobs — pretrain each encoder, extract each
encoder's features, train each member's head. A backend maps such a list and returns every job's value
by name. ``LocalBackend`` runs them in order in this process (the default, no extra dependency);
``RayBackend`` submits each one as a Ray task with the declared CPUs and (fractional) GPUs, so members
spread over the GPUs and machines of a Ray cluster — or share one GPU — with no change to the code.

Jobs are plain module-level functions: Ray ships them by reference, so the same function runs in both
backends. A job that finds its result already on disk calls :func:`mark_reused`; progress then shows it
as reused rather than done. The thread count of a job is part of its result on CPU (matrix products
split their sums over threads), so for bit-identical results across backends give both the same
``threads``/``cpus_per_member``.
"""

from __future__ import annotations

import contextvars
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.markup import escape

from ..errors import ConfigError, PicoJepaError
from ..progress import console

RAY_MISSING = "the ray backend needs Ray, an optional extra: pip install 'picojepa[ray]'"

_reused: contextvars.ContextVar[bool] = contextvars.ContextVar("picojepa_job_reused", default=False)


def mark_reused() -> None:
    """Called by a job that found its finished result on disk instead of computing it."""
    _reused.set(True)


@dataclass
class Job:
    name: str  # what it is for: an encoder or member name, e.g. "partial_2"
    fn: Callable[..., Any]  # a module-level function
    args: tuple[Any, ...] = ()
    device: bool = True  # runs on the accelerator: gets the GPU share on Ray


@dataclass
class Outcome:
    value: Any
    reused: bool
    seconds: float
    host: str


@dataclass
class _UserError:
    """A user mistake raised inside a task: deterministic, so it is returned rather than retried."""

    error: PicoJepaError


def execute(fn: Callable[..., Any], args: tuple[Any, ...], threads: int | None) -> Outcome:
    """Run one job with ``threads`` torch threads (None: as configured), noting whether it was reused."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    token = _reused.set(False)
    start = time.perf_counter()
    try:
        value = fn(*args)
        return Outcome(value, _reused.get(), time.perf_counter() - start, platform.node())
    finally:
        _reused.reset(token)
        torch.set_num_threads(before)


class Board:
    """Per-job state lines — running (with attempt and host), done, reused — and the stage's count."""

    def __init__(self, stage: str, names: list[str], enabled: bool) -> None:
        self.stage, self.total, self.enabled = stage, len(names), enabled
        self.attempts = dict.fromkeys(names, 0)
        self.finished = 0

    def running(self, name: str, host: str = "") -> None:
        self.attempts[name] += 1
        attempt = self.attempts[name]
        where = f" on {host}" if host else ""
        again = f" (attempt {attempt}, after a failure)" if attempt > 1 else ""
        self._say(f"{name}: running{where}{again}")

    def done(self, name: str, outcome: Outcome) -> None:
        self.finished += 1
        self._say(f"{name}: reused (finished earlier)" if outcome.reused
                  else f"{name}: done in {outcome.seconds:.1f} s")

    def failed(self, name: str, error: BaseException) -> None:
        self._say(f"{name}: failed ({type(error).__name__})")

    def _say(self, line: str) -> None:
        if self.enabled:
            # one line per state change, never wrapped (logs are grepped); the brackets are not rich markup
            console.print(escape(f"[{self.stage} {self.finished}/{self.total}] {line}"), soft_wrap=True)


class Backend:
    """Maps a stage's jobs; a context manager so a backend that starts something also stops it."""

    name = "backend"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop whatever the backend started (nothing, for the local one)."""

    def share(self, value: Any) -> Any:
        """A handle to pass ``value`` to many jobs while shipping it once."""
        return value

    def map(self, stage: str, jobs: list[Job]) -> dict[str, Any]:
        raise NotImplementedError


class LocalBackend(Backend):
    """One job after another in this process."""

    name = "local"

    def __init__(self, threads: int | None = None, progress: bool = True) -> None:
        if threads is not None and threads < 1:
            raise ConfigError("--cpus-per-member must be at least 1")
        self.threads, self.progress = threads, progress

    def map(self, stage: str, jobs: list[Job]) -> dict[str, Any]:
        _check_names(jobs)
        board = Board(stage, [j.name for j in jobs], self.progress)
        values = {}
        for job in jobs:
            board.running(job.name)
            outcome = execute(job.fn, job.args, self.threads)
            board.done(job.name, outcome)
            values[job.name] = outcome.value
        return values


class RayBackend(Backend):
    """Each job a Ray task with ``cpus_per_member`` CPUs and ``gpus_per_member`` GPUs (fractions share one).

    Without ``address`` a local Ray instance is started and stopped with the backend; with one (``auto``,
    ``host:port`` or ``ray://host:port``) the driver joins that cluster and leaves it running. In a
    process where Ray is already initialised, that connection is used as it is. A job that raises is
    retried ``max_retries`` times (a crashed worker or lost node too), except for user mistakes.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_member: float | None = None,
                 gpus_per_member: float | None = None, max_retries: int = 2, local_cpus: int | None = None,
                 progress: bool = True, init_options: dict[str, Any] | None = None) -> None:
        """``local_cpus`` caps a local instance; ``init_options`` go to ``ray.init`` (e.g. a ``runtime_env``)."""
        try:
            import ray
        except ImportError:
            raise PicoJepaError(RAY_MISSING) from None
        cpus = 1.0 if cpus_per_member is None else float(cpus_per_member)
        if cpus <= 0:
            raise ConfigError("--cpus-per-member must be positive")
        if gpus_per_member is not None and (gpus_per_member < 0 or (
                gpus_per_member > 1 and not float(gpus_per_member).is_integer())):
            raise ConfigError("--gpus-per-member must be a fraction of one GPU (e.g. 0.25) or a whole number")
        if max_retries < 0:
            raise ConfigError("max_retries must be ≥ 0")
        self.ray, self.cpus, self.max_retries, self.progress = ray, cpus, max_retries, progress
        self.owned = not ray.is_initialized()
        if self.owned:
            # The driver's own log setup and a dashboard are not needed to map a list of tasks.
            options: dict[str, Any] = {"include_dashboard": False, "configure_logging": False, **(init_options or {})}
            if address:
                try:
                    ray.init(address=address, **options)
                except ConnectionError as e:
                    raise PicoJepaError(f"cannot join the Ray cluster at {address} ({e}); on the head node use "
                                        f"--ray-address auto, elsewhere the address 'ray start --head' printed") from e
            else:
                ray.init(address="local", num_cpus=local_cpus, **options)
        resources = ray.cluster_resources()
        self.gpus = float(gpus_per_member) if gpus_per_member is not None else (
            1.0 if resources.get("GPU", 0) >= 1 else 0.0)
        self._check_fits()
        self._log: Any = None

    def _check_fits(self) -> None:
        """A task no node can hold would wait forever: say so now."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= self.cpus and r.get("GPU", 0) >= self.gpus for r in nodes):
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes) or "no live node"
            self.close()
            raise PicoJepaError(f"no node of the Ray cluster can run a member with {self.cpus:g} CPU and "
                                f"{self.gpus:g} GPU (nodes: {have}); lower --cpus-per-member/--gpus-per-member")

    def close(self) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()

    def share(self, value: Any) -> Any:
        return self.ray.put(value)  # top-level task arguments that are refs arrive as values

    def map(self, stage: str, jobs: list[Job]) -> dict[str, Any]:
        _check_names(jobs)
        ray = self.ray
        if self._log is None:
            self._log = ray.remote(num_cpus=0)(StartLog).remote()
        task = ray.remote(_ray_task)
        board = Board(stage, [j.name for j in jobs], self.progress)
        threads = max(1, int(self.cpus))
        pending = {}
        for job in jobs:
            options = {"num_cpus": self.cpus, "num_gpus": self.gpus if job.device else 0,
                       "max_retries": self.max_retries, "retry_exceptions": True, "name": f"{stage}:{job.name}"}
            ref = task.options(**options).remote(self._log, stage, job.name, job.fn, threads, *job.args)
            pending[ref] = job.name
        values: dict[str, Any] = {}
        seen = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # the timeout only refreshes states
            starts = ray.get(self._log.since.remote(stage, seen))
            seen += len(starts)
            for name, host in starts:
                board.running(name, host)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # retries are spent: stop the rest and surface the task's own error
                    board.failed(name, e)
                    for other in pending:
                        ray.cancel(other)
                    raise
                if isinstance(outcome, _UserError):
                    for other in pending:
                        ray.cancel(other)
                    raise outcome.error
                board.done(name, outcome)
                values[name] = outcome.value
        return {job.name: values[job.name] for job in jobs}


class StartLog:
    """A tiny Ray actor that tasks tell when they start, so the driver can show running states and retries."""

    def __init__(self) -> None:
        self.starts: dict[str, list[tuple[str, str]]] = {}

    def started(self, stage: str, name: str, host: str) -> None:
        self.starts.setdefault(stage, []).append((name, host))

    def since(self, stage: str, index: int) -> list[tuple[str, str]]:
        return self.starts.get(stage, [])[index:]


def _ray_task(log: Any, stage: str, name: str, fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    import ray

    log.started.remote(stage, name, f"{platform.node()} (node {ray.get_runtime_context().get_node_id()[:8]})")
    try:
        return execute(fn, args, threads)
    except PicoJepaError as e:
        return _UserError(e)


def _check_names(jobs: list[Job]) -> None:
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique, got {names}")


def make_backend(name: str, *, address: str | None = None, cpus_per_member: float | None = None,
                 gpus_per_member: float | None = None, progress: bool = True) -> Backend:
    """The backend the command line asks for."""
    if name == "local":
        if address or gpus_per_member:
            raise ConfigError("--ray-address and --gpus-per-member need --backend ray")
        threads = None if cpus_per_member is None else int(cpus_per_member)
        if cpus_per_member is not None and threads != cpus_per_member:
            raise ConfigError("--cpus-per-member must be a whole number with --backend local (torch threads)")
        return LocalBackend(threads, progress)
    if name == "ray":
        return RayBackend(address, cpus_per_member, gpus_per_member, progress=progress)
    raise ConfigError(f"--backend must be local or ray, got {name!r}")
