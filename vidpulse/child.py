"""One process that ``vidpulse up`` supervises: started in its own session, set to die with the supervisor,
its output copied to ours (and its last lines kept, to say why it failed), stopped with a deadline."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("vidpulse.supervisor")
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 45  # the worker's last flush and commit, and uvicorn's 30 s drain of open connections, fit in it
BACKOFF_FIRST_S = 1.0
_write_lock = threading.Lock()


@dataclass
class Child:
    """One supervised process: how to start it, how to know it serves, and its recent history."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    exits: deque[float] = field(default_factory=deque)
    backoff_s: float = BACKOFF_FIRST_S
    started_at: float = 0.0
    restart_at: float | None = None
    pump: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with(os.getpid()))
        self.started_at, self.restart_at = time.monotonic(), None
        self.pump = threading.Thread(target=_pump, args=(self, self.proc), name=f"log-{self.name}", daemon=True)
        self.pump.start()
        log.info("started %s (pid %d)", self.name, self.proc.pid, extra={"part": self.name})

    def exited(self) -> int | None:
        """Its exit status, once it has exited unasked (None while it runs or waits for its restart)."""
        if self.proc is None or self.restart_at is not None:
            return None
        return self.proc.poll()

    def last_lines(self) -> str:
        """Its tail, once the reader has copied what an exited process wrote last (usually why it exited)."""
        if self.pump is not None and self.proc is not None and self.proc.poll() is not None:
            self.pump.join(5)
        return "\n".join(self.tail)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, up to ``timeout_s`` for a clean exit, then SIGKILL."""
        self.restart_at = None
        if self.proc is None or self.proc.poll() is not None:
            return
        began = time.monotonic()
        log.info("stopping %s (pid %d)", self.name, self.proc.pid, extra={"part": self.name})
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: SIGKILL", self.name, timeout_s, extra={"part": self.name})
            self.proc.kill()
            self.proc.wait()
        self.last_lines()  # its last lines (how it stopped) before ours
        log.info("stopped %s (exit %s) in %.1f s", self.name, self.proc.returncode, time.monotonic() - began,
                 extra={"part": self.name})


def _die_with(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn: the child gets SIGKILL when the supervisor dies, however it dies (Linux's
    PR_SET_PDEATHSIG; it survives the child's exec). libc is loaded here, before the fork. Elsewhere there
    is none: a SIGKILLed supervisor leaves its children there (a SIGTERMed one still stops them)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def set_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the supervisor died before the signal was set
            os._exit(1)
    return set_death_signal


def _pump(child: Child, proc: subprocess.Popen[bytes]) -> None:
    """Copies a child's output to ours, each JSON log line tagged with the process, and keeps its tail."""
    assert proc.stdout is not None
    tag = f'{{"part":"{child.name}",'.encode()
    for line in proc.stdout:
        child.tail.append(line.decode(errors="replace").rstrip())
        tagged = tag + line[1:] if line.startswith(b"{") else f"[{child.name}] ".encode() + line
        with _write_lock:
            sys.stdout.buffer.write(tagged)
            sys.stdout.buffer.flush()
