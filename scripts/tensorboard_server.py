"""A real TensorBoard server on a free loopback port, read through its HTTP data API, and headless
Chromium to see its dashboards as a person does. Used by ``tests/test_tensorboard.py`` and by
``scripts/figures.py`` (the screenshot ``docs/figures/tensorboard.png``).

    with TensorBoardServer(logdir) as tb:
        tb.wait_for_runs(["lr=1", "lr=3"])               # bounded wait for the event files
        tb.get("/data/plugin/scalars/tags")               # {run: {tag: {...}}}
        tb.post("/data/plugin/hparams/session_groups", {...})
        with HeadlessChromium(scalars_url(tb, "train/J")) as page:
            scalar_chart(page, "train/J", ["lr=1", "lr=3"])  # waits until the lines are drawn
            page.screenshot("tensorboard.png")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["CannotBind", "HeadlessChromium", "TensorBoardServer", "chromium", "scalar_chart", "scalars_url"]

HOST = "127.0.0.1"


class CannotBind(RuntimeError):
    """No loopback port can be listened on here (a sandbox without networking)."""


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            return s.getsockname()[1]
    except OSError as err:
        raise CannotBind(f"cannot listen on {HOST}: {err}") from None


def tensorboard_command() -> list[str]:
    """The ``tensorboard`` beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "tensorboard"
    found = str(beside) if beside.exists() else shutil.which("tensorboard")
    return [found] if found else [sys.executable, "-m", "tensorboard.main"]


class TensorBoardServer:
    """``tensorboard --logdir LOGDIR --host 127.0.0.1 --port P`` as a child process; stopped (and
    killed if it does not stop) on leaving the ``with`` block, whatever happened inside.

    Raises :class:`CannotBind` if no loopback port can be bound, and ``RuntimeError`` if the
    server exits or does not answer within ``start_timeout`` seconds (its last output in the
    message).
    """

    def __init__(self, logdir: str | Path, start_timeout: float = 60.0) -> None:
        self.logdir, self.start_timeout = Path(logdir), start_timeout
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> TensorBoardServer:
        self._log = tempfile.TemporaryFile(mode="w+")
        cmd = [*tensorboard_command(), "--logdir", str(self.logdir), "--host", HOST, "--port", str(self.port),
               "--reload_interval", "1", "--load_fast", "false"]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        try:
            self._until(lambda: self.get("/data/runs") is not None, self.start_timeout, "answer")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def output(self) -> str:
        """What the server printed so far."""
        self._log.seek(0)
        return self._log.read()

    def _until(self, ready, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = self.output()[-500:]
                failed = CannotBind if "bind" in last.lower() else RuntimeError
                raise failed(f"tensorboard exited ({self.proc.returncode}): {last}")
            result = ready()
            if result:
                return result
            time.sleep(0.25)
        last = self.output()[-500:]
        raise RuntimeError(f"tensorboard did not {what} on {self.url} within {timeout:.0f} s: {last}")

    def _request(self, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json", "X-XSRF-Protected": "1"}
        method = "GET" if body is None else "POST"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            return None

    def get(self, path: str):
        """The JSON at ``path`` (e.g. ``/data/plugin/scalars/tags``), or None if no answer."""
        return self._request(path)

    def post(self, path: str, body: dict):
        """POST ``body`` as JSON (the hparams plugin's requests); the JSON answer, or None."""
        return self._request(path, body)

    def wait_for_runs(self, runs, tag: str = "train/J", timeout: float = 60.0) -> dict:
        """Wait until every run in ``runs`` lists the scalar ``tag``; returns the scalar tags."""

        def ready():
            tags = self.get("/data/plugin/scalars/tags") or {}
            return tags if all(tag in tags.get(run, {}) for run in runs) else None

        return self._until(ready, timeout, f"list {tag} for runs {sorted(runs)}")


def chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium/Chrome) on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


class HeadlessChromium:
    """Headless Chromium on one page, driven through the DevTools protocol over a pipe
    (``--remote-debugging-pipe``: JSON messages ended by NUL on file descriptors 3 and 4, no
    extra package). Polymer dashboards such as TensorBoard's Scalars live in shadow DOM, which
    ``--dump-dom`` does not print; :meth:`evaluate` runs JavaScript in the page instead.

        with HeadlessChromium(url, size=(1280, 860)) as page:
            page.evaluate("document.title")
            page.screenshot("page.png")
    """

    def __init__(self, url: str, size: tuple[int, int] = (1280, 860)) -> None:
        self.url, self.size = url, size

    def __enter__(self) -> HeadlessChromium:
        exe = chromium()
        if exe is None:
            raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_chromium, self._write = os.pipe()  # chromium reads commands on its fd 3
        self._read, from_chromium = os.pipe()  # and writes answers and events on its fd 4
        # Above 9 first, so that moving them onto 3 and 4 in the child cannot overwrite either.
        to_chromium, from_chromium = (self._above_9(fd) for fd in (to_chromium, from_chromium))

        def as_fds_3_and_4() -> None:
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        width, height = self.size
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", "--remote-debugging-pipe",
               f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}",
               self.url]  # fmt: skip
        quiet = subprocess.DEVNULL
        fds = dict(pass_fds=(3, 4), preexec_fn=as_fds_3_and_4)
        # its own process group: chromium's helpers (zygote, crash handler) go with it at the end
        self.proc = subprocess.Popen(cmd, stdout=quiet, stderr=quiet, start_new_session=True, **fds)
        os.close(to_chromium)
        os.close(from_chromium)
        self._next_id, self._buffer = 0, b""
        try:
            page = self._until_page()
            self._session = self.call("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
            # the viewport itself (--window-size includes the invisible window's frame)
            self.call("Emulation.setDeviceMetricsOverride", session=self._session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:  # helpers still writing into the profile would race its removal
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for fd in (self._write, self._read):
            os.close(fd)
        self._profile.cleanup()

    @staticmethod
    def _above_9(fd: int) -> int:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return moved

    def _until_page(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pages = [t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            if pages:
                return pages[0]["targetId"]
            time.sleep(0.2)
        raise TimeoutError(f"chromium opened no page for {self.url} within {timeout:.0f} s")

    def call(self, method: str, session: str | None = None, timeout: float = 60.0, **params) -> dict:
        """Send one DevTools command (to the page's session if ``session``); return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._read], [], [], left)[0]:
                    raise TimeoutError(f"chromium did not answer {method} within {timeout:.0f} s")
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe during {method} (exit {self.proc.poll()})")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next_id:  # everything else is an event: not needed here
                if "error" in answer:
                    raise RuntimeError(f"chromium: {method} failed: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call(
            "Runtime.evaluate",
            session=self._session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, png: str | Path) -> Path:
        """Save the viewport as PNG."""
        data = self.call("Page.captureScreenshot", session=self._session, format="png")["data"]
        png = Path(png)
        png.write_bytes(base64.b64decode(data))
        return png


# What the Scalars dashboard drew for one tag: its cards live in shadow DOM, so walk every shadow
# root. Per matching tf-scalar-card: the runs it was asked to load, and the stroke colours of the
# plotted lines that have points (one colour per run; smoothed and raw lines share it).
_SCALAR_CHART_JS = r"""(tag => {
  const all = (root, selector, found = []) => {
    if (!root) return found;  // no document yet: the page is still loading
    if (root.matches && root.matches(selector)) found.push(root);
    if (root.shadowRoot) all(root.shadowRoot, selector, found);
    for (const child of root.children || []) all(child, selector, found);
    return found;
  };
  const selector = all(document.documentElement, 'tf-multi-checkbox')[0];
  return {
    runs: selector ? selector.names : [],
    cards: all(document.documentElement, 'tf-scalar-card').filter(card => card.tag === tag).map(card => ({
      runs: (card.dataToLoad || []).map(item => item.run),
      colours: [...new Set(all(card, 'path.line').filter(p => (p.getAttribute('d') || '').length > 1)
                                               .map(p => p.getAttribute('stroke')))],
    })),
  };
})"""


def scalars_url(server: TensorBoardServer, tag_filter: str) -> str:
    """The Scalars dashboard showing the tags that match the regular expression ``tag_filter``
    (e.g. ``"train/J"``, ``"^(train|val)/J$"``)."""
    return f"{server.url}/#scalars&tagFilter={urllib.parse.quote(tag_filter, safe='')}"


def scalar_chart(page: HeadlessChromium, tag: str, runs, timeout: float = 60.0) -> dict:
    """Wait until the Scalars dashboard shows the chart of ``tag`` with a line for each run in
    ``runs``; returns ``{"runs": [run names listed], "cards": [{"runs": [...], "colours": [...]}]}``
    as the page has it then (or raises ``TimeoutError``)."""
    expression = f"{_SCALAR_CHART_JS}({json.dumps(tag)})"
    wanted = set(runs)
    deadline = time.monotonic() + timeout
    while True:
        state = page.evaluate(expression)
        drawn = [c for c in state["cards"] if wanted <= set(c["runs"]) and len(c["colours"]) >= len(wanted)]
        if drawn:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no {tag} chart with lines for {sorted(wanted)} within {timeout:.0f} s: {state}"
            )
        time.sleep(0.25)
