"""Starting a service under benchmark: a free port, and the wait until it answers ready.

Shared by ``end_to_end.py`` (its serve stage), ``serve_start_benchmark.py`` and
``serve_benchmark.py``, so the three measure a start the same way.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str,
    *,
    timeout: float,
    started: float | None = None,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    condition: Callable[[], bool] | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``url`` until it answers 200; the seconds from ``started`` (a ``time.perf_counter()``
    reading, default: the call) until it did.

    While the port refuses (the server is still starting) the poll retries. ``condition``, when
    given, must hold before the URL is asked (for example: every worker logged that it is
    ready). RuntimeError when ``process`` exits first or nothing answers within ``timeout``
    seconds of ``started``, with the end of ``log`` when given."""
    started = time.perf_counter() if started is None else started

    def tail() -> str:
        return f":\n{log.read_text(errors='replace')[-3000:]}" if log is not None and log.exists() else ""

    while time.perf_counter() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before it was ready{tail()}")
        if condition is None or condition():
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass  # still starting: the port refuses until the workers listen
        time.sleep(interval)
    raise RuntimeError(f"{url} did not answer ready within {timeout} s{tail()}")
