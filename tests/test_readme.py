"""The README's front door: every Python snippet runs as shown against the output of the demo (``make
demo``'s code path, ``python -m m3leo_hf.demo``, at 64 px to stay fast), and where the README shows the
snippet's output, the run prints the same chips in the same order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)

pytestmark = pytest.mark.datasets  # the snippets use load_dataset


def snippets() -> list[tuple[str, str | None]]:
    """(python code, the plain block right after it or None) for each ```python block of README.md."""
    text = (ROOT / "README.md").read_text()
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in FENCE.finditer(text)]
    found = []
    for i, (language, body, _, end) in enumerate(blocks):
        if language != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        shown = following[1] if following and not following[0] and not text[end:following[2]].strip() else None
        found.append((body, shown))
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A folder holding ``demo-out/`` as ``make demo`` writes it (smaller chips)."""
    work = tmp_path_factory.mktemp("readme")
    done = subprocess.run([sys.executable, "-m", "m3leo_hf.demo", "--out", "demo-out", "--pixels", "64"],
                          cwd=work, env=_env(work), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return work


def _env(work: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(work / "hf-cache"), "HF_HOME": str(work / "hf-home")}


def test_readme_has_python_snippets():
    assert len(snippets()) >= 3


@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs_against_the_demo_output(demo, index, tmp_path):
    code, shown = snippets()[index]
    script = tmp_path / "snippet.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], cwd=demo, env=_env(demo), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README snippet {index} failed:\n{code}\n{done.stderr[-3000:]}"
    if shown is not None:
        printed = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
        expected = [line.split()[0] for line in shown.splitlines() if line.strip()]
        assert printed == expected, f"README snippet {index} prints other chips than shown:\n{done.stdout}"
