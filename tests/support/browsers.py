"""The web chat page in real headless Chromium: Debian's ``chromium`` driven through its
``chromedriver`` by Selenium (never a downloaded browser), a ``switchboard serve --http``
subprocess for it to talk to, and ``ChatPage``, what a person does on the page.

Without the browser the tests skip, naming the Debian packages (in CI a skip fails:
``support.ci``).  Every wait has a deadline (``ChatPage.wait``), none sleeps and hopes.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.network import HOST, free_port
from support.servers import ServerProcess, start_server_process
from support.waiting import WAIT_S, wait_until

BROWSER_PACKAGES = "chromium and chromium-driver"


def _chromium() -> tuple[str, str] | None:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    return None if browser is None or driver is None else (browser, driver)


@pytest.fixture
def browser_factory() -> Iterator[Callable[..., Any]]:
    """``browser_factory(width=, height=)``: a new headless Chromium window (its own profile,
    so its own localStorage); every one is closed after the test."""
    found = _chromium()
    if found is None:
        pytest.skip(f"headless Chromium not found: install the Debian packages {BROWSER_PACKAGES}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[dev]'")
    browser, driver_path = found
    drivers: list[Any] = []

    def factory(*, width: int = 1100, height: int = 720, phone: bool = False) -> Any:
        """``phone``: a ``width`` x ``height`` CSS-pixel touch screen at 3 device pixels per
        CSS pixel (a desktop window cannot be narrower than 500 pixels)."""
        options = webdriver.ChromeOptions()
        if phone:
            metrics = {"width": width, "height": height, "pixelRatio": 3.0, "touch": True}
            options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
        options.binary_location = browser
        for arg in (
            "--headless=new",
            "--no-sandbox",  # the tests run as root in CI
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--disable-extensions",
            "--no-first-run",
            "--lang=en-US",
            f"--window-size={width},{height}",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        drivers.append(driver)
        return driver

    yield factory
    for driver in drivers:
        driver.quit()


@dataclass
class WebServerProcess:
    """``switchboard serve`` with ``--http`` on a free port that stays the same across
    ``restart()``, so that a page can reconnect to it."""

    args: tuple[str, ...] = ()
    http_port: int = field(default_factory=free_port)
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}/"

    @property
    def port(self) -> int:
        """The TCP port of the running server (a new one after each restart)."""
        assert self.process is not None
        return self.process.port

    def start(self) -> WebServerProcess:
        self.process = start_server_process("--http", f"{HOST}:{self.http_port}", *self.args)
        if not wait_until(self._answers, WAIT_S, step=0.05):
            raise AssertionError(f"nothing answers HTTP on {self.url}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=1) as reply:
                return int(reply.status) == 200
        except (urllib.error.URLError, OSError):
            return False


@pytest.fixture
def web_server_factory() -> Iterator[Callable[..., WebServerProcess]]:
    """``web_server_factory(*serve_args)``: a started WebServerProcess, stopped after the test."""
    started: list[WebServerProcess] = []

    def factory(*args: str) -> WebServerProcess:
        server = WebServerProcess(args).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture
def web_server(web_server_factory: Callable[..., WebServerProcess]) -> WebServerProcess:
    return web_server_factory()


class ChatPage:
    """One browser window on the chat page, driven the way a person uses it; reads what the
    page shows through the DOM (``textContent``), never its internal state."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        driver.get(url)
        self.wait(lambda: self.js("return document.getElementById('login').open"), "the login form")

    # --- plumbing --------------------------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
        """Poll ``predicate`` until it returns something truthy (returned); fail naming
        ``what``, with the page's status, error and console, after ``timeout``."""
        result: list[Any] = [None]

        def check() -> bool:
            result[0] = predicate()
            return bool(result[0])

        if not wait_until(check, timeout, step=0.05):
            raise AssertionError(
                f"timed out waiting for {what}; status {self.status()!r}, error {self.error()!r}, "
                f"login error {self.text_of('login-error')!r}, console {self.console()}"
            )
        return result[0]

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def type_into(self, element_id: str, text: str, *, submit: bool = True) -> None:
        box = self.find(f"#{element_id}")
        box.clear()
        # Characters outside the BMP (emoji) cannot be typed by chromedriver: set them.
        self.js("arguments[0].value = arguments[1]", box, text)
        if submit:
            self.js("arguments[0].form.requestSubmit()", box)

    def shown(self, element_id: str) -> bool:
        """Whether the element takes up room on the screen (not hidden by any rule)."""
        return bool(
            self.js(
                "const e = document.getElementById(arguments[0]);"
                "return e.getClientRects().length > 0"
                " && getComputedStyle(e).visibility !== 'hidden'",
                element_id,
            )
        )

    def text_of(self, element_id: str) -> str:
        return str(self.js("return document.getElementById(arguments[0]).textContent", element_id))

    def status(self) -> str:
        return self.text_of("status")

    def error(self) -> str:
        return self.text_of("error")

    def console(self) -> list[str]:
        try:
            return [entry["message"] for entry in self.driver.get_log("browser")]
        except Exception:  # a driver without the log type
            return []

    # --- what a person does ----------------------------------------------------------------

    def login(self, nick: str, token: str = "") -> None:
        self.submit_login(nick, token)
        self.wait(
            lambda: (
                self.js("return document.getElementById('status').dataset.state") == "open"
                and self.text_of("me") == nick
            ),
            f"{nick!r} to be connected",
        )

    def submit_login(self, nick: str, token: str = "") -> None:
        if token:
            self.type_into("token", token, submit=False)
        self.type_into("nick", nick)

    def login_error(self) -> str:
        return str(
            self.wait(
                lambda: self.js(
                    "const e = document.getElementById('login-error');"
                    "return document.getElementById('login').open && !e.hidden && e.textContent"
                ),
                "the login form to show an error",
            )
        )

    def join(self, room: str) -> None:
        self.type_into("join-room", room)
        self.wait(lambda: self.title() == f"#{room}", f"the room #{room} to open")

    def title(self) -> str:
        return self.text_of("conversation-title")

    def open(self, key: str) -> None:
        """Switch to the conversation ``room:NAME`` or ``direct:ID`` in the side bar (found and
        clicked in one step: the side bar is redrawn as messages arrive)."""
        self.wait(
            lambda: self.js(
                "const b = [...document.querySelectorAll('button.conversation')]"
                ".find(b => b.dataset.key === arguments[0]);"
                "if (b) b.click(); return !!b",
                key,
            ),
            f"the conversation {key} in the side bar",
        )
        self.wait(lambda: self.showing() == key, f"the conversation {key} on screen")

    def message_client(self, client_id: int) -> None:
        """Click the envelope of ``client_id``'s row in the client list (refreshing the list
        with its button until the row is there, as a person would; found and clicked in one
        step, as the list is redrawn when it changes)."""

        def clicked() -> bool:
            if self.js(
                "const b = document.querySelector("
                "`button.message-client[data-client-id='${arguments[0]}']`);"
                "if (b) b.click(); return !!b",
                client_id,
            ):
                return True
            self.js("document.getElementById('refresh-clients').click()")
            return False

        self.wait(clicked, f"client #{client_id} in the client list")
        self.wait(
            lambda: self.title().endswith(f"(#{client_id})"), f"the conversation with #{client_id}"
        )

    def say(self, text: str) -> None:
        """Type ``text`` into the open conversation and press Enter."""
        self.type_into("text", text)

    def showing(self) -> str | None:
        """The key of the conversation on screen."""
        return self.js("return document.querySelector('#lines ol')?.dataset.conversation ?? null")

    def lines(self, key: str) -> list[dict[str, Any]]:
        """The lines of a conversation as shown (switching to it first, as a person would):
        nick, text, classes, receipt mark."""
        if self.showing() != key:
            if not self.js(
                "return [...document.querySelectorAll('button.conversation')]"
                ".some(b => b.dataset.key === arguments[0])",
                key,
            ):
                return []
            self.open(key)
        return list(
            self.js(
                """
                const list = document.querySelector('#lines ol');
                if (!list || list.dataset.conversation !== arguments[0]) return [];
                return [...list.children].map(li => ({
                  cls: li.className,
                  nick: li.querySelector('.nick')?.textContent ?? null,
                  text: li.querySelector('.text')?.textContent ?? li.textContent,
                  receipt: li.querySelector('.receipt')?.dataset.status ?? null,
                  time: li.querySelector('time')?.textContent ?? null,
                }));
                """,
                key,
            )
        )

    def wait_line(self, key: str, text: str, *, nick: str | None = None) -> dict[str, Any]:
        """The line of ``key`` whose text is ``text`` (from ``nick``), once it is shown."""

        def found() -> dict[str, Any] | None:
            for line in self.lines(key):
                if line["text"] == text and (nick is None or line["nick"] == nick):
                    return line
            return None

        line: dict[str, Any] = self.wait(found, f"{text!r} in {key}")
        return line

    def wait_receipt(self, key: str, text: str, status: str) -> None:
        self.wait(
            lambda: any(
                line["text"] == text and line["receipt"] == status for line in self.lines(key)
            ),
            f"the receipt mark {status!r} on {text!r} in {key}",
        )

    def clients(self) -> list[list[str]]:
        """The client list as shown: [id, nickname, address] per row."""
        return list(
            self.js(
                "return [...document.querySelectorAll('#clients tbody tr')].map(tr =>"
                " [...tr.cells].slice(0, 3).map(td => td.querySelector('bdi')?.textContent"
                " ?? td.textContent))"
            )
        )

    def members(self) -> list[str]:
        return list(
            self.js(
                "return [...document.querySelectorAll('#members .nick')].map(n => n.textContent)"
            )
        )
