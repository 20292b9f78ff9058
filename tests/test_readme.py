"""Every example of the documentation, run, so that none goes stale: README.md and every page
docs/*.md (a glob: a page added later is included).

Each page runs in a fresh temporary folder of its own, its ```bash and ```python blocks in the
order they appear, so a command can use what an earlier one left there (``predict --ckpt_path
best`` after a ``fit``, a ``.csv`` written by a Python block). Every line of a ```bash block is a
command (``# comments`` allowed, ``\\`` continues a line, ``> FILE`` at the end writes the
command's output to FILE); a trailing comment saying ``exit code N`` expects that exit code
instead of 0. Rules by command:

* ``mlp-torch ...``: run through its entry point (``mlp_torch.cli.command:main``) in this process
  (a new process would add Lightning's import, about 5 s, to every line); a line with
  ``--trainer.strategy`` (several processes) runs as a real ``mlp-torch`` process. ``fit`` and
  ``sweep`` get ``--trainer.max_epochs 2`` (4 when ``--ckpt_path`` is given, so a resume has
  epochs left to train) and every Lightning subcommand ``--trainer.enable_progress_bar false``
  appended; ``--print_config`` and ``--help`` lines run as written. The sweeps' grids are kept
  small in the pages themselves.
* ``scripts/figures NAMES`` (and ``python scripts/figures.py NAMES``): ``scripts/figures.py NAMES
  --out <tmp>``, so docs/figures/ is left alone.
* ``python scripts/benchmark.py ...`` (or ``.venv/bin/python``): with ``--rounds 1 --skip wide
  process sweep`` appended and ``--out`` pointed into the page's folder.
* ``tensorboard --logdir DIR``: only checked to name a folder that exists by then (no server).
* ``scripts/train``, ``scripts/test``, ``scripts/setup``: not run; they are the quick start (the
  suite itself is what ``scripts/test`` runs, and ``scripts/train`` is ``mlp-torch fit``).

Any other command in a ```bash block fails the test: give it a rule here, or show it in a
```text block. A ```python block runs with ``exec`` in a namespace of its own (each block is
self-contained, as a reader would paste it); calls of ``mlp_torch.fit`` keep ``max_epochs``
small in the page itself. A block that calls ``gradient_check`` must print PASS and no FAIL.

Besides the pages' blocks: the batch gradient descent J-rise figures docs/notes.md quotes, the
scikit-learn comparison script behind docs/results.md (on iris, one seed), the README's size and
links, and every relative link of every page. The pages' other figures come from scripts the
suite runs too: scripts/seeds.py (tests/test_cli.py), scripts/cv.py (tests/test_cli.py),
scripts/configs.py (tests/test_configs.py).
"""

from __future__ import annotations

import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
QUIET = ["--trainer.enable_progress_bar", "false"]
LIGHTNING = ("fit", "validate", "test", "predict", "sweep")
NOT_RUN = ("scripts/train", "scripts/test", "scripts/setup")
FENCE = re.compile(r"^([ \t]*)```(bash|python)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
BENCHMARK = ["--rounds", "1", "--skip", "wide", "process", "sweep"]  # the per-update table, once
README_LIMIT = 15_000  # bytes: the README is the front door, the docs/ pages hold the rest


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def page_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, text)`` of each ```bash and ```python block of ``page``, in order."""
    found = []
    for indent, language, text in FENCE.findall(page.read_text(encoding="utf-8")):
        lines = [line[len(indent) :] if line.startswith(indent) else line for line in text.splitlines()]
        found.append((language, "\n".join(lines) + "\n"))
    return found


def commands(block: str) -> list[tuple[list[str], int]]:
    """A ```bash block's commands: ``(argv, expected exit code)`` per line, continuations joined."""
    joined, out = re.sub(r"\\\n", " ", block), []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            code = re.search(r"#.*\bexit code (\d+)", line)
            out.append((argv, int(code[1]) if code else 0))
    return out


def split_redirect(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without a trailing ``> FILE``, and FILE (or None)."""
    if len(argv) >= 3 and argv[-2] == ">":
        return argv[:-2], argv[-1]
    return argv, None


def python_script(argv: list[str]) -> str | None:
    """``scripts/X.py`` when ``argv`` is ``python scripts/X.py ...`` (any python), else None."""
    if len(argv) >= 2 and Path(argv[0]).name.startswith("python") and argv[1].startswith("scripts/"):
        return argv[1]
    return None


def run_mlp_torch(args: list[str], cwd: Path, capsys) -> tuple[int, str, str]:
    """``mlp-torch ARGS`` in ``cwd``: (exit code, stdout, stderr)."""
    if args and args[0] in LIGHTNING and not {"--print_config", "--help", "-h"} & set(args):
        if args[0] in ("fit", "sweep"):
            args = [*args, "--trainer.max_epochs", "4" if "--ckpt_path" in args else "2"]
        args = [*args, *QUIET]
    if "--trainer.strategy" in args:  # several processes: Lightning starts them from a real command
        proc = subprocess.run([sys.executable, "-m", "mlp_torch.cli", *args], cwd=cwd,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        return proc.returncode, proc.stdout, proc.stderr
    from mlp_torch.cli.command import main

    capsys.readouterr()
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def run_script(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    script, rest = python_script(argv), argv[2:]
    if script == "scripts/figures.py":
        return run_figures(rest, cwd)
    if script == "scripts/benchmark.py":
        kept, skip = [], False
        for arg in rest:  # the page's own --out is replaced by one in the page's folder
            if skip:
                skip = False
            elif arg == "--out":
                skip = True
            elif not arg.startswith("--out="):
                kept.append(arg)
        args = [*kept, *BENCHMARK, "--out", str(cwd / "benchmark.json")]
        proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        return proc.returncode, proc.stdout, proc.stderr
    raise AssertionError(f"no rule for {shlex.join(argv)!r}: add one to tests/test_readme.py or use ```text")


def run_figures(names: list[str], cwd: Path) -> tuple[int, str, str]:
    figures = ROOT / "scripts" / "figures.py"  # --out: docs/figures/ and docs/gallery.md stay as they are
    proc = subprocess.run([sys.executable, str(figures), *names, "--out", str(cwd / "figures")], cwd=cwd,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def run_command(argv: list[str], cwd: Path, capsys) -> tuple[int, str, str] | None:
    """One line of a ```bash block in ``cwd``: (exit code, stdout, stderr), or None if not run."""
    program = argv[0]
    if program in NOT_RUN:
        return None
    if Path(program).name == "mlp-torch":
        return run_mlp_torch(argv[1:], cwd, capsys)
    if program == "scripts/figures":
        return run_figures(argv[1:], cwd)
    if python_script(argv):
        return run_script(argv, cwd)
    if Path(program).name == "tensorboard":
        assert "--logdir" in argv, argv
        logdir = argv[argv.index("--logdir") + 1]
        assert (cwd / logdir).is_dir(), f"{shlex.join(argv)}: no folder {logdir} at this point of the page"
        return None
    raise AssertionError(f"no rule for {shlex.join(argv)!r}: add one to tests/test_readme.py or use ```text")


def run_python(block: str, where: str, capsys) -> None:
    capsys.readouterr()
    exec(compile(block, where, "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "gradient_check(" in block:
        assert "PASS" in out and "FAIL" not in out, out


RUNNABLE = [pytest.param(page, id=name(page)) for page in PAGES if page_blocks(page)]


@pytest.mark.parametrize("page", RUNNABLE)
def test_every_example_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for i, (language, block) in enumerate(page_blocks(page)):
        if language == "python":
            run_python(block, f"{name(page)}, python block {i + 1}", capsys)
            continue
        for argv, expected in commands(block):
            argv, target = split_redirect(argv)
            result = run_command(argv, tmp_path, capsys)
            if result is None:
                continue
            code, out, err = result
            assert code == expected, (name(page), shlex.join(argv), code, err[-3000:])
            if target:
                (tmp_path / target).write_text(out)


def test_the_readme_is_a_front_door():
    """At most 15 KB, and it links every docs/ page, the changelog and the license."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode()):,} bytes"
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md", ROOT / "LICENSE"]:
        assert f"]({name(page)})" in text, f"README.md does not link {name(page)}"


@pytest.mark.parametrize("page", [pytest.param(p, id=name(p)) for p in PAGES])
def test_relative_links_lead_somewhere(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{name(page)} links {target}, which does not exist"


def test_batch_gradient_descent_j_rises_as_docs_notes_says(tmp_path, monkeypatch, caplog, capsys):
    """The batch config's rises of J as docs/notes.md words them: the first epoch's overshoot,
    then a stretch of rises every other epoch. Where that stretch starts depends on the CPU's
    float32 rounding (the page says so), so only what holds on any CPU is asserted: its start
    within the range the page gives, its length, its rhythm."""
    text = (ROOT / "docs" / "notes.md").read_text(encoding="utf-8")
    said = re.search(
        r"first\s+epoch \(J ([\d.]+) -> ([\d.]+)\).*?at least (\d+)\s+rises"
        r".*?between\s+epochs? (\d+) and (\d+)",
        text,
        re.S,
    )
    assert said, "docs/notes.md no longer quotes the batch config's rises"
    first_from, first_to = float(said[1]), float(said[2])
    length, low, high = int(said[3]), int(said[4]), int(said[5])
    from mlp_torch.cli.command import main

    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", "batch", "--diagnostics.max_printed", "100",
            "--trainer.max_epochs", str(high + 2 * length + 2), *QUIET]  # fmt: skip
    with caplog.at_level("WARNING"):
        assert main(args) == 0, capsys.readouterr().err[-2000:]
    warned = "\n".join(record.getMessage() for record in caplog.records)
    rises = re.findall(r"epoch (\d+): training J rose from ([\d.]+) to ([\d.]+)", warned)
    assert rises[0][0] == "1" and round(float(rises[0][1]), 2) == first_from
    assert round(float(rises[0][2]), 1) == first_to
    later = [int(epoch) for epoch, _, _ in rises[1:]]
    assert len(later) >= length and low <= later[0] <= high, later
    assert all(b - a == 2 for a, b in zip(later, later[1:length])), later  # every other epoch


def test_scikit_learn_comparison_script_runs(tmp_path, monkeypatch, capsys):
    """scripts/compare_sklearn.py, run in this process (it imports what the suite has imported)."""
    script = ROOT / "scripts" / "compare_sklearn.py"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--dataset", "iris", "--seeds", "0"])
    runpy.run_path(str(script), run_name="__main__")
    assert len(re.findall(r"test acc [\d.]+%; median [\d.]+%", capsys.readouterr().out)) == 3
