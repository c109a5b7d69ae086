"""Decoding under a time limit, in a worker process that is killed when time runs out.

Why a process and not a thread: a decode that hangs is stuck inside FFmpeg's C code (a stalled
network mount, a pipe nobody writes), and a Python thread cannot be stopped; a timed-out
thread would keep its CPU and memory until the call returns, if it ever does. A process is
killed outright and its memory returned, and a decoder that crashes on a bad file (a segfault)
becomes a `DecodeError` instead of taking the run down.

Why a fresh interpreter (`python -m vdial.extract.decode.worker`) and not fork: forking a
parent that runs other threads (torch, zarr's event loop, decoder threads) is unsafe, and
children forked from the test suite did crash. multiprocessing's spawn would re-import the
caller's main module. The worker is started once and reused, so the imports (torch, for
torchcodec) are paid once, not per video; it is replaced after a timeout, a crash or a failed
plan. The plan runs in the caller (so plans with side effects act in the caller's memory): the
worker sends the frame count and rate, the caller sends back the indices, one array per plan
(`decode_sets`: one per encoder). A `DecodePool` holds several workers for the extraction
pipeline, which decodes several videos at once; `read_frames(..., timeout_s=...)` uses a shared
pool of one, on which calls from several threads take turns.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from vdial.extract.decode.core import (
    Backend,
    DecodeError,
    Frames,
    SetsChooser,
    decode_sets,
    resolve,
    unavailable_reason,
)


class _Worker:
    """The worker process and our end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # The worker imports vdial from wherever this process did, installed or not.
        source_root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vdial.extract.decode.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.loaded: set[str] = set()

    def load(self, backend: Backend) -> None:
        """Import the backend's library in the worker, outside any video's time limit."""
        if backend not in self.loaded:
            self.conn.send(("load", backend))
            self.receive(None, Path("<worker>"), 0)
            self.loaded.add(backend)

    def receive(self, deadline: float | None, path: Path, timeout_s: float):
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.conn.poll(wait):
            raise DecodeError(path, f"timed out after {timeout_s:g} s")
        try:
            return self.conn.recv()
        except EOFError:
            code = self.process.wait()
            raise DecodeError(path, f"decoder process died (exit code {code})") from None

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.conn.close()


class DecodePool:
    """Up to `size` worker processes, each decoding for one caller thread at a time.

    The extraction pipeline decodes several videos at once from a thread pool of the same
    size; each thread borrows an idle worker (starting one when none is idle) and returns it
    when the worker answered, or kills it after a timeout, a crash or a failed plan.
    """

    def __init__(self, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"a decode pool needs at least one worker, got {size}")
        self.size = size
        self._slots = threading.Semaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.poll() is None]

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    return worker
                self._all.remove(worker)
            worker = _Worker()
            self._all.append(worker)
            return worker

    def _discard(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._all.remove(worker)

    def decode(self, path: Path, indices, backend: Backend, timeout_s: float | None) -> Frames:
        """`decode` in a worker; DecodeError(path, "timed out after N s") past `timeout_s`."""
        plans = self.decode_sets(
            path,
            lambda num_frames, fps: [resolve(indices, num_frames, fps, path)],
            backend,
            timeout_s,
        )
        return plans[0]

    def decode_sets(
        self, path: Path, choose: SetsChooser, backend: Backend, timeout_s: float | None
    ) -> list[Frames]:
        """`decode_sets` in a worker, under the same time limit as `decode`.

        `choose(num_frames, fps)` runs here and returns checked index arrays (see `resolve`).
        """
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        with self._slots:
            worker = self._take()
            healthy = False
            try:
                worker.load(backend)
                worker.conn.send(("decode", (str(path), backend)))
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                while True:
                    kind, payload = worker.receive(deadline, path, timeout_s)
                    if kind == "plan":
                        worker.conn.send(("indices", choose(*payload)))
                        continue
                    healthy = True  # the worker answered and waits for the next request
                    if kind == "error":
                        raise payload
                    return payload
            finally:
                if healthy:
                    with self._lock:
                        self._idle.append(worker)
                else:  # timed out, died, or left waiting for indices: replace it
                    self._discard(worker)

    def close(self) -> None:
        """Stop every worker; the pool starts new ones if it is used again."""
        with self._lock:
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.stop()


DEFAULT_POOL = DecodePool(1)
atexit.register(DEFAULT_POOL.close)


def decode_with_timeout(path: Path, indices, backend: Backend, timeout_s: float) -> Frames:
    """`decode` in the shared one-worker pool; calls from several threads take turns."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    return DEFAULT_POOL.decode(path, indices, backend, timeout_s)


def _serve(conn: Connection) -> None:
    """The worker's loop: load and decode requests until the caller closes the socket."""

    def choose(num_frames: int, fps: float) -> list[np.ndarray]:
        conn.send(("plan", (num_frames, fps)))
        return conn.recv()[1]

    while True:
        try:
            kind, payload = conn.recv()
        except EOFError:
            return
        if kind == "load":
            conn.send(("loaded", unavailable_reason(payload)))
            continue
        try:
            decoded = decode_sets(Path(payload[0]), payload[1], choose)
        except Exception as err:  # every failure goes back to the caller, which raises it there
            conn.send(("error", _portable(err)))
        else:
            conn.send(("frames", decoded))


def _portable(err: Exception) -> Exception:
    """`err` with the worker's traceback attached as a note, in a form that pickles."""
    import pickle

    note = "in the decode worker process:\n" + "".join(traceback.format_exception(err))
    err.add_note(note)
    try:
        pickle.dumps(err)
    except (pickle.PicklingError, TypeError, AttributeError):
        return RuntimeError(f"{type(err).__name__}: {err}\n{note}")
    return err


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
