"""The web console of `tribute serve` in a real browser: headless Chromium driven by
chromedriver over the W3C WebDriver protocol (plain HTTP, standard library only).

Run by run.sh next to it (which starts the server):
    python test_console_browser.py URL KEY DATA_DIR OUT_DIR
KEY may read the receipts; DATA_DIR holds the sample datanet's JSONL files (the texts the
passages shown must come from); OUT_DIR receives console.png. As a person would: type the
key, ask a question, watch the answer stream in, click a citation marker (and open another
with the keyboard), then check the passage and weight shown against the source documents
and the signed receipt the server journaled.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

QUESTION = "How many times per second does the Zephyr flight controller correct the attitude?"
# The W3C WebDriver element reference key and the keys Tab and Enter.
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
TAB, ENTER = "\ue004", "\ue007"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    """The few WebDriver commands the test needs, over HTTP to chromedriver."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.base}{path}" if not self.session else f"{self.base}/session/{self.session}{path}"
        request = urllib.request.Request(
            url, data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def start(self, profile: str) -> None:
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": shutil.which("chromium") or "/usr/bin/chromium",
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,1000",
                            f"--user-data-dir={profile}",
                        ],
                    },
                }
            }
        }
        self.session = self.call("POST", "/session", caps)["sessionId"]

    def quit(self) -> None:
        if self.session:
            try:
                self.call("DELETE", "")
            except (AssertionError, OSError):
                pass
            self.session = ""

    def go(self, url: str) -> None:
        self.call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self.call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def find_all(self, css: str) -> list[str]:
        found = self.call("POST", "/elements", {"using": "css selector", "value": css})
        return [e[ELEMENT] for e in found]

    def type(self, element: str, text: str) -> None:
        self.call("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self.call("POST", f"/element/{element}/click", {})

    def text(self, element: str) -> str:
        return self.call("GET", f"/element/{element}/text")

    def js(self, script: str, *args: Any) -> Any:
        return self.call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))


def wait(what: str, probe: Callable[[], Any], timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def receipt(url: str, key: str, receipt_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/v1/receipts/{receipt_id}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def sources(data_dir: Path) -> dict[str, str]:
    texts = {}
    for f in sorted(data_dir.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                texts[doc["id"]] = doc["text"]
    return texts


# One citation as the console shows it: "[1] Title — 81.2%", then
# "chunk · datanet · contributor", then the passage.
CITE = re.compile(r"^\[(\d+)\] (.+) — ([\d.]+)%$")


def shown_citation(driver: Driver, element: str) -> dict[str, Any]:
    lines = [l for l in driver.text(element).splitlines() if l.strip()]
    assert len(lines) >= 3, lines
    m = CITE.match(lines[0])
    assert m, f"citation header {lines[0]!r}"
    chunk_id, datanet, contributor = lines[1].split(" · ")
    return {
        "marker": int(m.group(1)),
        "title": m.group(2),
        "percent": float(m.group(3)),
        "chunk_id": chunk_id,
        "datanet": datanet,
        "contributor": contributor,
        "passage": "\n".join(lines[2:]),
    }


def check_console(driver: Driver, url: str, key: str, texts: dict[str, str], out: Path) -> None:
    driver.go(url + "/")
    # Without the key the console says why it cannot list the models.
    wait("the console to load", lambda: driver.text(driver.find("#health")) != "connecting…")
    driver.type(driver.find("#key"), key + TAB)
    wait("the model list", lambda: driver.find_all("#model option"))
    health = wait("the health line", lambda: "documents" in driver.text(driver.find("#health")) and driver.text(driver.find("#health")))
    print(f"console: {health}")

    # Count the states of the answer box that show streamed text before the cited answer
    # (with its marker buttons) replaces it: each one is a delta painted as it came.
    driver.js(
        """
        const box = document.getElementById('answer');
        window.__partial = new Set();
        new MutationObserver(() => {
          if (!box.querySelector('.marker') && box.textContent) window.__partial.add(box.textContent);
        }).observe(box, { childList: true, characterData: true, subtree: true });
        """
    )
    started = time.monotonic()
    driver.type(driver.find("#q"), QUESTION)
    driver.click(driver.find("#ask button[type=submit]"))
    markers = wait("the cited answer", lambda: driver.find_all("#answer .marker"), timeout=45)
    elapsed = time.monotonic() - started
    partial = driver.js("return window.__partial.size")
    answer = driver.text(driver.find("#answer"))
    print(f"console: answer in {elapsed:.1f} s after {partial} streamed states: {answer!r}")
    assert partial >= 1, "no streamed text was shown before the cited answer"

    receipt_line = wait("the receipt line", lambda: driver.text(driver.find("#receipt")))
    assert receipt_line.startswith("Receipt 0x"), receipt_line
    receipt_id = receipt_line.split()[1]
    signed = receipt(url, key, receipt_id)
    assert signed["verified"] is True, signed
    chunks = signed["receipt"]["chunks"]

    cites = driver.find_all("#citations .cite")
    shown = [shown_citation(driver, c) for c in cites]
    assert shown, "no citations listed"
    assert abs(sum(s["percent"] for s in shown) - 100.0) <= 0.05 * len(shown) + 1e-9, shown
    # The weights shown are the signed ones: per contributor, the receipt's basis points.
    by_contributor: dict[str, int] = {}
    for c in chunks:
        by_contributor[c["contributor"].lower()] = by_contributor.get(c["contributor"].lower(), 0) + c["weightBps"]
    for who, bps in by_contributor.items():
        pct = sum(s["percent"] for s in shown if s["contributor"].lower() == who)
        assert abs(pct - bps / 100) <= 0.05 * len(shown) + 1e-9, (who, bps, shown)

    def open_marker(index: int, keyboard: bool) -> dict[str, Any]:
        marker = driver.find_all("#answer .marker")[index]
        number = int(driver.text(marker).strip("[]"))
        if keyboard:
            driver.js("arguments[0].focus()", {ELEMENT: marker})
            driver.type(marker, ENTER)
        else:
            driver.click(marker)
        active = wait(f"citation [{number}] to open", lambda: driver.find_all("#citations .cite.active"), timeout=5)
        assert len(active) == 1, active
        c = shown_citation(driver, active[0])
        assert c["marker"] == number, (c, number)
        focused = driver.js("return document.activeElement.classList.contains('active')")
        assert focused, "the opened citation does not have the focus"
        # The passage is the cited chunk's own text, from the document the chunk id names.
        doc_id = c["chunk_id"].split("#")[0]
        assert doc_id in texts, c
        assert c["passage"] and c["passage"] in texts[doc_id], (c["passage"], texts[doc_id])
        # The marker's tooltip gives the same weight as the citation.
        title = driver.call("GET", f"/element/{marker}/property/title")
        assert title.endswith(f"— {c['percent']:.1f}%"), (title, c)
        assert 0 < c["percent"] <= 100, c
        print(
            f"console: {'Enter on' if keyboard else 'click on'} [{number}] shows {c['chunk_id']} "
            f"({c['percent']:.1f}%, {c['contributor']}): {c['passage'][:60]!r}…"
        )
        return c

    open_marker(0, keyboard=False)
    if len(markers) > 1:
        open_marker(len(markers) - 1, keyboard=True)

    # The receipts table lists the receipt, signature verified.
    def receipt_row() -> bool:
        rows = [driver.text(r) for r in driver.find_all("#receipts tr")]
        return any("✓ verifies" in r for r in rows) and rows
    wait("the receipts table", receipt_row, timeout=10)

    out.mkdir(parents=True, exist_ok=True)
    png = out / "console.png"
    driver.screenshot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
    print(f"console: screenshot {png} ({png.stat().st_size} bytes)")


def main() -> None:
    url, key, data_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    driver_bin = shutil.which("chromedriver")
    assert driver_bin, "no chromedriver on PATH"
    scratch = Path(tempfile.mkdtemp(prefix="tribute-browser."))
    port = free_port()
    # A scratch HOME keeps Chromium's profile and crash dumps out of the real one.
    env = dict(os.environ, HOME=str(scratch))
    log = open(scratch / "chromedriver.log", "w")
    proc = subprocess.Popen(
        [driver_bin, f"--port={port}"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    driver = Driver(f"http://127.0.0.1:{port}")
    try:
        wait("chromedriver", lambda: _ready(driver), timeout=20)
        driver.start(str(scratch / "profile"))
        check_console(driver, url, key, sources(data_dir), out)
    finally:
        driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
    print("test_console_browser.py: the console asked, streamed, cited and showed the passages")


def _ready(driver: Driver) -> bool:
    try:
        return bool(driver.call("GET", "/status").get("ready"))
    except (AssertionError, OSError):
        return False


if __name__ == "__main__":
    main()
