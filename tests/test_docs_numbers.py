"""The numbers the documentation quotes come from the committed scripts, and are what those
scripts write.

* docs/gallery.md: every region between ``<!-- numbers:NAME -->`` and ``<!-- /numbers -->`` is what
  docs/figures/numbers.json renders to (``scripts/figures.py``'s ``rewrite_page``), one region per
  figure; and one cheap figure, ``initialization``, regenerated into a temporary folder
  (``scripts/figures.py initialization --out TMP``) gives the numbers numbers.json holds.
* docs/performance.md: every region between ``<!-- benchmark:FILE.json -->`` and
  ``<!-- /benchmark -->`` is what that JSON file renders to (``scripts/benchmark.py``'s
  ``rewrite_page``), and every JSON file in docs/performance/ has its table.

A hand edit of a table, or a numbers file changed without the page, fails here: regenerate with
``scripts/figures NAME`` (or ``.venv/bin/python scripts/figures.py --render``) and
``.venv/bin/python scripts/benchmark.py --render --markdown docs/performance.md``.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
GALLERY, FIGURES = ROOT / "docs" / "gallery.md", ROOT / "docs" / "figures"
PERFORMANCE = ROOT / "docs" / "performance.md"

# Regenerating ``initialization`` on another CPU: its runs are smooth (Momentum lr 1 on the
# quadratic cost), so float32 rounding (PyTorch's kernels for AVX-512, AVX2 or none; the native
# loop compiled for znver5, haswell or a generic x86-64) moved its J by at most 3e-7 relative and
# its saturated fractions not at all. The page quotes J to 3 significant figures: 1e-3 relative.
J_TOLERANCE = 1e-3
# Zero weights' hidden units drift apart by rounding alone: 0 to ~1,500 eps over the 30 epochs,
# depending on how the CPU's loop rounds each unit's sums. Both runs must stay rounding-level.
ROUNDING_LEVEL_EPS = 1e4


def _script(name: str):
    """``scripts/NAME.py`` as a module (it imports its neighbours, e.g. tensorboard_server)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return __import__(name)


def _regions(pattern, text: str) -> dict[str, str]:
    return {m.group(2): m.group(0) for m in pattern.finditer(text)}


def test_gallery_quotes_numbers_json():
    figures = _script("figures")
    text = GALLERY.read_text(encoding="utf-8")
    entries = figures.read_numbers(FIGURES)
    assert entries, f"{FIGURES / figures.NUMBERS} is missing: run scripts/figures"
    names = figures.marked_names(text)
    assert sorted(names) == sorted(figures.FIGURES), f"one marked region per figure, got {names}"
    assert set(entries) <= set(names), (
        f"figures in numbers.json the page does not quote: {set(entries) - set(names)}"
    )
    for name, entry in entries.items():
        assert {"command", "date", "machine", "numbers"} <= set(entry), name
        assert {"cpu", "cores", "cpu_capability"} <= set(entry["machine"]), name
    rendered = figures.rewrite_page(text, entries)
    now, then = _regions(figures.MARKED, text), _regions(figures.MARKED, rendered)
    stale = [name for name in names if now[name] != then[name]]
    assert not stale, (
        f"docs/gallery.md's numbers of {stale} are not numbers.json's: run scripts/figures --render"
    )
    assert rendered == text


def test_performance_quotes_its_json_files():
    benchmark = _script("benchmark")
    text = PERFORMANCE.read_text(encoding="utf-8")
    named = benchmark.marked_files(text)
    assert named, "docs/performance.md has no table"
    for name in named:
        assert (PERFORMANCE.parent / name).is_file(), f"docs/performance.md quotes {name}, which is missing"
    on_disk = sorted(
        p.relative_to(PERFORMANCE.parent).as_posix() for p in (ROOT / "docs" / "performance").glob("*.json")
    )
    assert sorted(named) == on_disk, "one table per JSON file in docs/performance/"
    for name in named:
        results = json.loads((PERFORMANCE.parent / name).read_text())
        assert {"machine", "command", "date", "per_update_us"} <= set(results), name
    rendered = benchmark.rewrite_page(text, PERFORMANCE.parent)
    now, then = _regions(benchmark.MARKED, text), _regions(benchmark.MARKED, rendered)
    stale = [name for name in named if now[name] != then[name]]
    assert not stale, f"docs/performance.md's tables of {stale} are not their JSON: run benchmark.py --render"
    assert rendered == text


def _close(new: float, old: float, what: str) -> None:
    assert math.isclose(new, old, rel_tol=J_TOLERANCE), f"{what}: regenerated {new}, numbers.json {old}"


def test_initialization_regenerated_gives_the_numbers_of_numbers_json(tmp_path):
    page_before = GALLERY.read_text(encoding="utf-8")
    committed = json.loads((FIGURES / "numbers.json").read_text())["initialization"]["numbers"]
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "figures.py"), "initialization", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "initialization.png").stat().st_size > 10_000
    entry = json.loads((tmp_path / "numbers.json").read_text())
    assert list(entry) == ["initialization"], "only the figure made, in the folder given"
    assert entry["initialization"]["command"] == shlex.join(
        ["scripts/figures", "initialization", "--out", str(tmp_path)]
    )
    new = entry["initialization"]["numbers"]
    assert new["epochs"] == committed["epochs"]
    for init, J in committed["runs"].items():
        for key, value in J.items():
            _close(new["runs"][init][key], value, f"{init} {key}")
    for init, fraction in committed["saturated"].items():
        assert new["saturated"][init] == pytest.approx(fraction, abs=1e-3), init
    for dtype, zeros in committed["zeros"].items():
        _close(new["zeros"][dtype]["J_end"], zeros["J_end"], f"zeros {dtype} J_end")
        for spread in (new["zeros"][dtype]["spread_max_eps"], zeros["spread_max_eps"]):
            assert spread <= ROUNDING_LEVEL_EPS, f"zeros {dtype}: hidden units {spread:g} eps apart"
    assert GALLERY.read_text(encoding="utf-8") == page_before, "--out elsewhere leaves the page alone"
