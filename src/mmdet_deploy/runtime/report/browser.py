"""Open a page in headless Chromium and report what happened: console errors, requests, a screenshot.

Used by the tests (a real browser must load ``report.html`` without errors and draw its table) and by
``mmdet-report --screenshot``. It speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe``
(file descriptors 3 and 4, NUL-separated JSON): no port is opened, nothing but the standard library is
needed. Chromium is launched with the flags that keep it off the network (no background networking,
component updates, sync or QUIC) in a throw-away profile, in its own process group, and that group is
stopped by its handle when the check ends, whatever happens.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmdet_deploy.errors import MMDetError

#: Where Debian's package (``apt-get install chromium``) and other distributions put the browser.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--disable-breakpad",
         "--disable-crash-reporter", "--remote-debugging-pipe")


_TRAMPOLINE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
               "os.execv(sys.argv[3], sys.argv[3:])")


class BrowserError(MMDetError):
    """Chromium is missing, did not start, or did not answer in time."""


@dataclass
class PageCheck:
    """What loading one page did. ``errors``: console errors, uncaught exceptions and browser log errors
    (CSP violations, failed loads); ``requests``: every URL fetched besides the page itself and ``data:``;
    ``screenshot``: PNG bytes of the viewport; ``values``: the results of the expressions asked for."""

    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    values: dict[str, Any] = field(default_factory=dict)


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class _Pipe:
    """The DevTools protocol over the two pipes: numbered commands, their replies, and queued events."""

    def __init__(self, write_fd: int, read_fd: int) -> None:
        self._write = os.fdopen(write_fd, "wb", buffering=0)
        self._read = read_fd
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._next = 0
        threading.Thread(target=self._reader, name="cdp-reader", daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._read, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                self._messages.put(None)
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                self._messages.put(json.loads(message))

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._write.write(json.dumps(message).encode("utf-8") + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._get(deadline, method)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"chromium: {method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float) -> dict[str, Any]:
        for event in self.events:
            if event["method"] == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            reply = self._get(deadline, method)
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == method:
                    return reply

    def _get(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            reply = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise BrowserError(f"chromium did not answer {waiting_for} in time") from None
        if reply is None:
            raise BrowserError(f"chromium closed the DevTools pipe while waiting for {waiting_for}")
        return reply

    def close(self) -> None:
        self._write.close()
        os.close(self._read)


def _describe(event: dict[str, Any]) -> str | None:
    """One line for an event that counts as an error, None for the others."""
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        text = details.get("exception", {}).get("description") or details.get("text", "exception")
        return f"uncaught: {text.splitlines()[0]} (line {details.get('lineNumber', '?')})"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
        return f"console.{params['type']}: {args}"
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source', 'log')}: {entry.get('text', '')} {entry.get('url', '')}".strip()
    return None


def check_page(path: str | Path, *, width: int = 1400, height: int = 1000, keys: str = "",
               expressions: dict[str, str] | None = None, timeout: float = 60.0,
               chromium: str | None = None) -> PageCheck:
    """Load ``path`` (a local HTML file), press ``keys`` one by one, evaluate ``expressions``
    (name -> JavaScript), take a ``width`` x ``height`` screenshot; :class:`BrowserError` on failure."""
    executable = chromium or find_chromium()
    if executable is None:
        raise BrowserError("no Chromium found (Debian: apt-get install -y chromium)")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="mmdet-chromium-")
    # Pipe ends above fd 9, so that moving them onto 3 and 4 in the child can never overwrite one another.
    to_browser_r, to_browser_w = (_above_nine(fd) for fd in os.pipe())
    from_browser_r, from_browser_w = (_above_nine(fd) for fd in os.pipe())
    log = tempfile.TemporaryFile()
    # A tiny trampoline moves the pipe ends to fds 3 and 4 (where Chromium expects them), then becomes Chromium
    # (sh cannot: dash only redirects single-digit fds).
    command = [sys.executable, "-c", _TRAMPOLINE, str(to_browser_r), str(from_browser_w), executable, *FLAGS,
               f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            pass_fds=(to_browser_r, from_browser_w), start_new_session=True)
    os.close(to_browser_r)
    os.close(from_browser_w)
    pipe = _Pipe(to_browser_w, from_browser_r)
    try:
        return _drive(pipe, url, width, height, keys, expressions or {}, timeout)
    except (BrowserError, OSError) as exc:
        log.seek(0)
        tail = log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        raise BrowserError(f"{exc} ({' | '.join(tail) or 'no output'})") from None
    finally:
        _stop(pipe, proc)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def _drive(pipe: _Pipe, url: str, width: int, height: int, keys: str, expressions: dict[str, str],
           timeout: float) -> PageCheck:
    target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
        pipe.call(method, session=session)
    pipe.call("Emulation.setDeviceMetricsOverride",
              {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    pipe.events.clear()  # only what the page itself does counts
    pipe.call("Page.navigate", {"url": url}, session=session)
    pipe.wait_event("Page.loadEventFired", timeout)
    for key in keys:
        for kind in ("keyDown", "keyUp"):
            params = {"type": kind, "key": key, "text": key if kind == "keyDown" else ""}
            pipe.call("Input.dispatchKeyEvent", params, session=session)
    check = PageCheck(url)
    for name, expression in expressions.items():
        result = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            check.errors.append(f"evaluating {name}: {result['exceptionDetails'].get('text', 'exception')}")
        check.values[name] = result.get("result", {}).get("value")
    shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
    check.screenshot = base64.b64decode(shot["data"])
    pipe.call("Runtime.evaluate", {"expression": "0"}, session=session)  # flush events raised meanwhile
    for event in pipe.events:
        described = _describe(event)
        if described:
            check.errors.append(described)
        if event["method"] == "Network.requestWillBeSent":
            requested = event["params"]["request"]["url"]
            if requested != url and not requested.startswith("data:"):
                check.requests.append(requested)
    return check


def _stop(pipe: _Pipe, proc: subprocess.Popen[bytes]) -> None:
    """Close the browser politely, then make sure its whole process group is gone."""
    try:
        pipe.call("Browser.close", timeout=5)
    except (BrowserError, OSError, ValueError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # renderer and helper processes share the group we created
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)
    try:
        pipe.close()
    except OSError:
        pass
