"""Run a piece of Python in a child process under an address-space limit and a timeout (hostile-input tests).

``run_limited(code)`` returns the exit code, the output and the child's peak RSS, so a test can assert a clear
error, bounded memory and no hang at once. The child imports the project from this checkout.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIMIT_MB = 4096
DEFAULT_TIMEOUT_S = 120.0
_PEAK = "\n__peak_rss_kb__="
# VmHWM of the child's own address space: ru_maxrss survives execve on Linux, so it would report the RSS of
# the forked test process (preexec_fn forces a fork) instead of the child's.
_FOOTER = f"""
import sys as _s
_hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
if not _hwm:
    import resource as _r
    _hwm = [str(_r.getrusage(_r.RUSAGE_SELF).ru_maxrss)]
_s.stdout.write({_PEAK!r} + _hwm[0] + "\\n")
"""


@dataclass
class Limited:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float | None

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_limited(code: str, *, limit_mb: int = DEFAULT_LIMIT_MB, timeout_s: float = DEFAULT_TIMEOUT_S,
                cwd: str | os.PathLike | None = None, env: dict | None = None) -> Limited:
    """Run ``code`` in ``python -c`` with RLIMIT_AS = ``limit_mb``; a hang past ``timeout_s`` fails the test.

    The peak RSS is the child's own (VmHWM at its end, else ru_maxrss; ``None`` when it died before reporting it).
    """
    limit = limit_mb * 1024 * 1024

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [child_env.get("PYTHONPATH")])])
    child_env.setdefault("OMP_NUM_THREADS", "1")
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + _FOOTER], capture_output=True, text=True,
                              timeout=timeout_s, preexec_fn=cap, cwd=cwd, env=child_env)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"hung: no answer within {timeout_s} s\n{exc.stdout or ''}{exc.stderr or ''}") from None
    stdout, _, peak = done.stdout.partition(_PEAK)
    return Limited(done.returncode, stdout, done.stderr, int(peak.strip()) / 1024 if peak.strip() else None)
