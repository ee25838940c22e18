"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (no websocket, no Playwright).

Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4, so the
standard library is enough to drive headless Debian chromium, collect console errors and take screenshots.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
    # Any DNS lookup fails, so a page that still reached for a CDN would show up as a failed load.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
)
# Console and log events that count as page errors.
_ERROR_CONSOLE_TYPES = {"error", "assert"}


class CdpError(RuntimeError):
    """Chromium answered a command with an error, or did not answer in time."""


class ChromiumPage:
    """One headless chromium with one page, driven over the debugging pipe."""

    def __init__(self, user_data_dir: Path, *, executable: Path = CHROMIUM, timeout_s: float = 30.0) -> None:
        """Start chromium and attach to a fresh blank page."""
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Move chromium's ends above fd 9 so the redirections to fds 3 and 4 never overwrite one
        # another; bash, because dash only accepts single-digit fds in redirections.
        child_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)
        script = f'exec "$0" "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, str(executable), *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}",
             "about:blank"],
            pass_fds=(child_r, child_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for fd in (child_r, child_w):
            os.close(fd)
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.send(f"{domain}.enable", page=True)

    def send(self, method: str, params: Optional[dict[str, Any]] = None, *, page: bool = False) -> dict[str, Any]:
        """Send one command (to the page session when `page`) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda item: item.get("id") == self._next_id, method)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict[str, Any]:
        """Block until the page emits `method` (or one was already received)."""
        for event in self.events:
            if event.get("method") == method:
                return event
        return self._read_until(lambda item: item.get("method") == method, method)

    def evaluate(self, expression: str) -> Any:
        """Evaluate a JavaScript expression in the page and return its JSON value."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True)
        if "exceptionDetails" in result:
            raise CdpError(f"evaluate {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str) -> None:
        """Poll `expression` until it is truthy."""
        deadline = time.monotonic() + self.timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise CdpError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def open(self, url: str, *, width: int, height: int, is_mobile: bool = False) -> None:
        """Set the viewport and load `url`, returning after the load event."""
        self.set_viewport(width, height, is_mobile=is_mobile)
        self.events = [event for event in self.events if event.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": url}, page=True)
        self.wait_event("Page.loadEventFired")

    def set_viewport(self, width: int, height: int, *, is_mobile: bool = False) -> None:
        """Emulate a window of `width` × `height` CSS pixels."""
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": is_mobile}, page=True)

    def screenshot(self, path: Path) -> None:
        """Save a PNG of the whole page (beyond the viewport) to `path`."""
        width = self.evaluate("document.documentElement.scrollWidth")
        height = self.evaluate("document.documentElement.scrollHeight")
        result = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, page=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions, error log entries and failed loads seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in _ERROR_CONSOLE_TYPES:
                found.append(f"console.{params['type']}: {[arg.get('value') for arg in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {params.get('errorText')}")
        return found

    def requested_urls(self) -> list[str]:
        """Every URL the page asked the network stack for."""
        return [event["params"]["request"]["url"] for event in self.events
                if event.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        """Close the browser politely, then make sure the process is gone."""
        try:
            os.write(self._to_chrome, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass  # chromium already exited; nothing to close
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chrome, self._from_chrome):
            os.close(fd)

    def _read_until(self, matches: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Read messages until one `matches`; every event read on the way is kept in `self.events`."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                item = json.loads(raw)
                if "method" in item:
                    self.events.append(item)
                if matches(item):
                    return item
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_chrome], [], [], max(remaining, 0))
            if not ready:
                raise CdpError(f"no reply to {what} within {self.timeout_s} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CdpError(f"chromium exited while waiting for {what}")
            self._buffer += chunk
