"""Run a command and end its whole process group when the process that asked for it dies.

A trainer that starts a vLLM server and is then killed with SIGKILL runs no clean-up code: without help the server
(an API process, an engine core and its workers) would live on, holding the port, the memory and the CPU, and a
``--resume`` right after would meet a busy port. So the server is not started directly but under this small
watchdog, run with the standard library only::

    python watchdog.py PARENT_PID -- python -m vllm.entrypoints.openai.api_server ...

It must be started as the leader of a new session (``start_new_session=True``): the command joins that process group,
and killing the group ends the watchdog, the server and every process the server spawned. The watchdog ends the group
when

* the parent dies: Linux's ``PR_SET_PDEATHSIG`` sends it SIGTERM at once (the signal fires when the *thread* that
  started it exits, so start it from a thread that lives as long as the server, e.g. the main thread); polling
  ``getppid()`` every half second is the fallback on other systems;
* it gets SIGTERM or SIGINT itself (a clean stop);
* the command exits (then with the command's exit code).

The command itself gets ``PR_SET_PDEATHSIG = SIGTERM`` too, so even a SIGKILL of the watchdog (Ray kills an actor's
child processes when the actor ends) does not orphan it: vLLM's API server shuts down on SIGTERM and stops the engine
core and workers it started, which it cannot do when SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0  # SIGTERM first (vLLM shuts its workers down), SIGKILL after this


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies; False where ``prctl`` is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _end_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (ourselves excepted), SIGKILL what is left after the grace period."""
    group = os.getpgid(0)
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGKILL below must not stop us half-way
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # engine cores and workers too; this also ends the watchdog


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: watchdog.py PARENT_PID -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1
    # SIGTERM, not SIGKILL, when the watchdog itself is killed (Ray kills an actor's children with it): vLLM's API
    # server then stops its engine core and workers, which a SIGKILLed API server would leave orphaned.
    child = subprocess.Popen(argv[2:], preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM))
    while not stop and os.getppid() == parent:
        code = child.poll()
        if code is not None:
            return code
        time.sleep(POLL_SECONDS)
    _end_group(child)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
