"""The dashboard in a real browser: Debian's chromium, headless, driven by selenium.

A real server with a real sidecar (``python -m buzon.transform.sidecar`` running
``tac``); the browser logs in through the page's form, the test sends mail with
smtplib and waits for the page's charts to hold non-zero data (the page mirrors
its state on ``<body data-*>``), stops the sidecar and waits for the alert
banner (a one-second retry window), then switches transforms off with the
page's button and checks the server's own switch and ``/metrics``. The browser's
console must show no Content-Security-Policy violation. Set
``BUZON_DASHBOARD_SCREENSHOT=path.png`` to keep a screenshot of the loaded page.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import RunningServer, free_port, wait_for
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from buzon.transform import TransformError, health

KEY = bytes(range(32))
TOKEN = "t0k3n-ok"  # tests/helpers.py settings_for


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
        options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start_sidecar(root: Path, key_file: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A sidecar running ``tac`` on a free port, once it answers its health request."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUZON_SIDECAR_")}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "buzon.transform.sidecar", "--listen", "127.0.0.1",
             "--port", str(port), "--root", str(root), "--key-file", str(key_file), "--", "tac"],
            stdout=sink, stderr=subprocess.STDOUT, env=env)

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            asyncio.run(health("127.0.0.1", port, 1.0, key=KEY))
        except TransformError:
            return False
        return True

    assert wait_for(healthy), log.read_text()
    return proc, port


def body(driver: WebDriver, name: str) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute(f"data-{name}") or ""


def send(port: int, n: int, size: int = 2000) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for i in range(n):
            client.sendmail("alice@example.org", ["bob@example.org"],
                            f"Subject: load {i}\r\n\r\n" + ("x" * 78 + "\r\n") * (size // 80))
            time.sleep(0.02)  # spread over a few samples, as real traffic is


def test_login_live_charts_alert_banner_and_switch_in_chromium(
    make_server: Callable[..., RunningServer], browser: WebDriver, tmp_path: Path,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY.hex() + "\n")
    work = tmp_path / "data" / "work"
    (work / "w0").mkdir(parents=True)
    sidecar, sidecar_port = start_sidecar(work, key_file, tmp_path / "sidecar.log")
    try:
        server = make_server(http_port=0, transform_sidecars=f"127.0.0.1:{sidecar_port}",
                             transform_key_file=key_file, transform_retry_window=1.0)
        http = server.server.http_addresses[0][1]
        browser.get(f"http://127.0.0.1:{http}/dashboard")
        assert wait_for(lambda: int(body(browser, "points")) >= 1)
        toggle = browser.find_element(By.ID, "transform-toggle")
        assert not toggle.is_enabled()  # no switching without a login
        assert body(browser, "transform") == "on"

        # A wrong token is refused in words; the right one logs in.
        browser.find_element(By.ID, "token").send_keys("wrong-tk")
        browser.find_element(By.ID, "login-button").click()
        message = browser.find_element(By.ID, "login-message")
        assert wait_for(lambda: message.text == "wrong token")
        assert body(browser, "logged-in") == "false"
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "login-button").click()
        assert wait_for(lambda: body(browser, "logged-in") == "true")
        cookie = browser.get_cookie("buzon_session")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        send(server.port, 40)
        server.wait_idle()
        assert wait_for(lambda: {"traffic", "bytes", "delay"} <= set(
            body(browser, "nonzero").split(",")), timeout=20), body(browser, "nonzero")
        stages = browser.find_element(By.ID, "stage-rows")
        assert wait_for(lambda: f"127.0.0.1:{sidecar_port} up 40 " in stages.text), stages.text
        if shot := os.environ.get("BUZON_DASHBOARD_SCREENSHOT"):
            browser.save_screenshot(shot)

        # The sidecar stops; the next message cannot reach it: past the 1 s retry window
        # the banner says so.
        sidecar.terminate()
        sidecar.wait(10)
        banner = browser.find_element(By.ID, "alerts")
        assert not banner.is_displayed()
        send(server.port, 1)
        assert wait_for(lambda: "sidecar-down" in body(browser, "alerts"), timeout=20)
        assert banner.is_displayed()
        assert f"transform 127.0.0.1:{sidecar_port} unreachable" in banner.text

        # Switched off from the page: the server's switch, and /metrics, say so.
        assert wait_for(toggle.is_enabled)
        toggle.click()
        assert wait_for(lambda: body(browser, "transform") == "off")
        assert server.server.switch is not None and not server.server.switch.enabled
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10) as answer:
            assert b"\nbuzon_transform_enabled 0.0\n" in answer.read()

        logs = browser.get_log("browser")
        assert not [e for e in logs if "Content Security Policy" in e["message"]], logs
        wrong_login = "/api/login - Failed to load resource: the server responded with a " \
                      "status of 401"  # the wrong token above, on purpose
        assert not [e for e in logs if e["level"] == "SEVERE"
                    and wrong_login not in e["message"]], logs
    finally:
        if sidecar.poll() is None:
            sidecar.terminate()
            sidecar.wait(10)
