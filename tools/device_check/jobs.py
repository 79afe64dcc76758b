"""Child processes under a time limit: each runs in its own process group, its output
goes line by line to a log file (and, filtered, to the console), and at its limit the
leader gets SIGINT (pytest then still writes its report and junit file), then the whole
group SIGKILL after a grace period. Nothing here knows about stages."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass
class Outcome:
    rc: int | None          # exit status (negative: killed by that signal); None if it never started
    seconds: float
    timed_out: bool         # stopped at its limit
    killed: bool            # needed SIGKILL after SIGINT
    error: str = ""         # why it could not start


def _default_sigint() -> None:
    """In the child before exec: SIGINT's default action (an inherited ignore survives exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Job:
    """One command, started at once. `echo(line)` sees each output line (for progress)."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None, cwd: Path | None = None,
                 echo: Callable[[str], None] | None = None):
        self.cmd, self.log = [str(c) for c in cmd], Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.monotonic()
        self.timed_out = self.killed = False
        self.error = ""
        self._fh = open(self.log, "a", encoding="utf-8", errors="replace")
        self._fh.write(f"$ {' '.join(self.cmd)}\n")
        self._fh.flush()
        # started with SIGINT ignored (a background job of a non-interactive shell, a pytest-xdist
        # worker), a child would inherit the ignore and never see the stop's SIGINT
        ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True,
                                         preexec_fn=_default_sigint if ignored else None)
        except OSError as e:
            self.proc = None
            self.error = f"could not start {self.cmd[0]}: {e}"
            self._fh.write(self.error + "\n")
            self._fh.close()
            return
        self._reader = threading.Thread(target=self._pump, args=(echo,), daemon=True)
        self._reader.start()

    def _pump(self, echo) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace")
            self._fh.write(line)
            self._fh.flush()
            if echo is not None:
                echo(line.rstrip("\n"))
        self.proc.stdout.close()

    def _signal_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace_s: float) -> None:
        """SIGINT to the leader, then SIGKILL to the whole group if it is still there after
        `grace_s`. Only the leader: pytest-xdist's controller then stops its workers and
        writes the junit file, which it does not when every worker is interrupted too."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.timed_out = True
        try:
            self.proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.killed = True
            self._signal_group(signal.SIGKILL)
            self.proc.wait()

    def wait(self, until: float, grace_s: float = 20.0) -> Outcome:
        """Wait until the monotonic time `until`, then stop it. Children it left behind
        (xdist workers, a sanitizer's target) are killed with it."""
        if self.proc is None:
            return Outcome(None, 0.0, False, False, self.error)
        try:
            self.proc.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.stop(grace_s)
        self._signal_group(signal.SIGKILL)   # stragglers of a finished leader
        self._reader.join(timeout=5)
        note = ""
        if self.timed_out:
            note = f"stopped at its time limit (SIGINT{', then SIGKILL' if self.killed else ''})"
        self._fh.write(f"[exit {self.proc.returncode} after {time.monotonic() - self.t0:.1f}s{'; ' + note if note else ''}]\n")
        self._fh.close()
        return Outcome(self.proc.returncode, time.monotonic() - self.t0, self.timed_out, self.killed)


def run(cmd, log: Path, seconds: float, env=None, cwd=None, echo=None, grace_s: float = 20.0) -> Outcome:
    """Run `cmd` for at most `seconds` (then SIGINT, SIGKILL after `grace_s`)."""
    job = Job(cmd, log, env, cwd, echo)
    return job.wait(time.monotonic() + seconds, grace_s)
