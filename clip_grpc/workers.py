"""`--workers N`: N server processes on one port, under one supervisor.

One Python process tops out at a few thousand texts a second: most of its event loop's time per
message is gRPC's own code under the GIL (BENCHMARKS.md, "Several worker processes"). With N
workers the kernel spreads incoming connections (SO_REUSEPORT; connections, not calls) over N
such processes, each with its model copy, batcher and share of the cores.

The supervisor (the process started: a container's PID 1) checks that the ports are free, spawns
the workers, serves `/metrics` for all of them, forwards SIGTERM/SIGINT/SIGHUP, replaces a
worker that dies after it was serving, and stops everything, exit 2, when one fails to start.
A worker loads its model before it binds, so a restarted one never takes connections it cannot
serve yet; it dies with the supervisor (PR_SET_PDEATHSIG), so none is ever orphaned.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from .config import ServerConfig
from .errors import StartupError
from .logs import setup_logging

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = 1.0
KILL_MARGIN_S = 10.0  # after the drain's grace, before a worker still alive is SIGKILLed
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def core_share(workers: int) -> int:
    """Each worker's cores: torch's threads and, unless --preprocess-workers says, its
    preprocessing threads."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def worker_config(config: ServerConfig) -> ServerConfig:
    return dataclasses.replace(
        config, preprocess_workers=config.preprocess_workers or core_share(config.workers))


def check_free(config: ServerConfig) -> None:
    """A StartupError naming the flag of a port something else holds. The workers bind with
    SO_REUSEPORT, which would let them share a port with a stranger; this bind does not."""
    host = config.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for flag, port in (("--port", config.port), ("--health-port", config.health_port)):
        if not port:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                raise StartupError(
                    f"{flag} {port}: cannot listen on {config.host}:{port} "
                    f"({error.strerror or error}); choose another port") from None


# -- in the worker process -----------------------------------------------------------------


def _become_worker(index: int, parent: int) -> None:
    """Named clip-worker-N in ps and top; ends (drained) with the supervisor."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_NAME, f"clip-worker-{index}".encode())
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # SIGTERM: drain what it has, then go
    if os.getppid() != parent:  # the supervisor was gone before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def run_worker(config: ServerConfig, index: int, parent: int, report: Connection) -> None:
    """A worker's whole life (the target of its process)."""
    setup_logging(config.log_level, config.log_format, worker=index)
    os.environ.setdefault("OMP_NUM_THREADS", str(core_share(config.workers)))  # before torch
    import asyncio

    from .errors import ModelLoadError

    try:
        asyncio.run(_serve(config, index, parent, report))
    except (ModelLoadError, StartupError) as error:
        report.send(("failed", str(error)))
        raise SystemExit(2) from None


async def _serve(config: ServerConfig, index: int, parent: int, report: Connection) -> None:
    import asyncio

    from .model.loading import load_model
    from .server import start_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _become_worker(index, parent)
    loading = asyncio.create_task(
        asyncio.to_thread(load_model, config.model_path, config.device, config.dtype))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # stopped while loading: nothing was accepted yet
        return
    loaded = loading.result()  # a model that did not load stops here, before any bind
    metrics_at = ("127.0.0.1", 0) if config.metrics_port else None
    running = await start_server(config, reuse_port=True, metrics_at=metrics_at)
    loop.add_signal_handler(signal.SIGHUP, running.reload_files)
    try:
        await running.load(loaded)
        endpoint = running.metrics_endpoint
        report.send(("serving", endpoint.port if endpoint else 0))
        await stopper
    finally:
        await running.stop()


# -- in the supervisor -----------------------------------------------------------------------


@dataclass
class Worker:
    index: int
    process: multiprocessing.Process
    report: Connection | None  # None once it has ended
    serving: bool = False
    metrics_port: int = 0


class Supervisor:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.child_config = worker_config(config)
        self.context = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.workers: dict[int, Worker] = {}
        self.restart_at: dict[int, float] = {}
        self.stop_deadline: float | None = None
        self.exit_code = 0

    def start(self, index: int) -> None:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=run_worker, name=f"clip-grpc-worker-{index}",
            args=(self.child_config, index, os.getpid(), send))
        process.start()
        send.close()
        self.workers[index] = Worker(index, process, receive)

    def signal_all(self, signum: int) -> None:
        for worker in list(self.workers.values()):
            if worker.process.is_alive():
                os.kill(worker.process.pid, signum)

    def request_stop(self, *_) -> None:
        if self.stop_deadline is None:
            log.info("stopping the workers", extra={"grace_seconds": self.config.grace_seconds})
            self.stop_deadline = time.monotonic() + self.config.grace_seconds + KILL_MARGIN_S
            self.restart_at.clear()
        self.signal_all(signal.SIGTERM)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        signal.signal(signal.SIGHUP, lambda *_: self.signal_all(signal.SIGHUP))
        log.info("starting workers", extra={
            "workers": self.config.workers, "port": self.config.port,
            "threads_per_worker": core_share(self.config.workers),
            "preprocess_workers": self.child_config.preprocess_workers})
        for index in range(self.config.workers):
            self.start(index)
        try:
            while self.workers or self.restart_at:
                self._step()
        finally:
            self.signal_all(signal.SIGKILL)  # only past the deadline, or on an error of ours
        return self.exit_code

    def _step(self) -> None:
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            log.error("workers still running after the grace period: killed",
                      extra={"pids": [w.process.pid for w in self.workers.values()]})
            self.signal_all(signal.SIGKILL)
            self.exit_code = self.exit_code or 1
        handles = {w.process.sentinel: w for w in self.workers.values()}
        handles.update({w.report: w for w in self.workers.values() if w.report is not None})
        for ready in wait(list(handles), timeout=0.2):
            worker = handles[ready]
            if ready is worker.report:
                self._read_report(worker)
            elif worker.index in self.workers:
                self._ended(worker)
        for index, when in list(self.restart_at.items()):
            if time.monotonic() >= when:
                del self.restart_at[index]
                self.start(index)

    def _read_report(self, worker: Worker) -> None:
        try:
            kind, value = worker.report.recv()
        except EOFError:  # the worker has ended: its sentinel says how
            worker.report = None
            return
        if kind == "serving":
            worker.serving, worker.metrics_port = True, value
            log.info("worker serving", extra={"worker": worker.index, "pid": worker.process.pid})
            if len(self.workers) == self.config.workers and all(
                    w.serving for w in self.workers.values()):
                log.info("all workers serving", extra={
                    "workers": self.config.workers,
                    "address": f"{self.config.host}:{self.config.port}"})
            return
        log.error("worker did not start: %s", value, extra={"worker": worker.index})
        self._fail(2)

    def _fail(self, code: int) -> None:
        self.exit_code = self.exit_code or code
        self.request_stop()

    def _ended(self, worker: Worker) -> None:
        worker.process.join()
        del self.workers[worker.index]
        code = worker.process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.stop_deadline is not None:  # stopping: each drains and ends
            if code != 0:
                log.warning("worker stopped with %s", how, extra={"worker": worker.index})
                self.exit_code = self.exit_code or 1
        elif not worker.serving:
            log.error("worker ended before serving (%s)", how, extra={"worker": worker.index})
            self._fail(2)
        else:
            log.error("worker ended (%s): starting another", how,
                      extra={"worker": worker.index, "pid": worker.process.pid})
            self.restart_at[worker.index] = time.monotonic() + RESTART_BACKOFF_S


def supervise(config: ServerConfig) -> int:
    """Run `config.workers` workers until SIGTERM or SIGINT; the process's exit code."""
    from .worker_metrics import WorkerMetricsEndpoint

    try:
        check_free(config)
        supervisor = Supervisor(config)
        endpoint = (WorkerMetricsEndpoint(supervisor, config.host, config.metrics_port)
                    if config.metrics_port else None)
    except StartupError as error:
        log.error("cannot start: %s", error)
        return 2
    try:
        return supervisor.run()
    finally:
        if endpoint:
            endpoint.close()
