"""The web chat page in real headless Chromium against ``switchboard serve --http``: two
pages and a TCP client (the client library) in one room and by direct message both ways with
receipts, a nickname that is taken, a server restart, HTML in a nickname and a text, and a
screenshot (docs/web.png, shown in the README)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.browsers import ChatPage, WebServerProcess
from support.peers import RawPeer, next_of
from support.waiting import wait_until
from switchboard.client import Client
from switchboard.protocol import (
    Joined,
    Left,
    Message,
    NickChanged,
    NickOk,
    NickRequest,
    ReceiptStatus,
)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "web.png"

Browser = Callable[..., Any]


def tcp_client(server: WebServerProcess, nick: str) -> Client:
    return Client("127.0.0.1", server.port, nick=nick, timeout=10)


def test_two_pages_and_a_tcp_client_chat_in_a_room_and_directly(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    alice = ChatPage(browser_factory(), web_server.url)
    alice.login("alice")
    bob = ChatPage(browser_factory(), web_server.url)
    bob.login("bob")
    # The server's name and clock (hh:mm:ss and its zone) in the header.
    assert alice.text_of("server-name") == "test-server"
    assert re.fullmatch(r"\d\d:\d\d:\d\d \S+", alice.text_of("server-time"))
    with tcp_client(web_server, "carol") as carol:
        carol.join("lobby")
        carol.broadcast("lobby", "said before anyone came")
        alice.join("lobby")
        # The room's history comes with the join, marked as such.
        history = alice.wait_line("room:lobby", "said before anyone came", nick="carol")
        assert "history" in history["cls"].split()
        assert re.fullmatch(r"\d\d:\d\d:\d\d", history["time"])
        assert next_of(carol, Joined).nick == "alice"
        bob.join("lobby")
        alice.wait_line("room:lobby", "joined #lobby", nick="bob")
        alice.wait(lambda: sorted(alice.members()) == ["alice", "bob", "carol"], "three members")

        # A room line from a page reaches the other page and the TCP client...
        alice.say("hello from alice 你好 🎉")
        bob.wait_line("room:lobby", "hello from alice 你好 🎉", nick="alice")
        message = next_of(carol, Message)
        assert (message.room, message.sender_nick, message.text) == (
            "lobby",
            "alice",
            "hello from alice 你好 🎉",
        )
        alice.wait_receipt("room:lobby", "hello from alice 你好 🎉", "reached")
        # ... and one from the TCP client reaches both pages.
        carol.broadcast("lobby", "שלום from carol")
        for page in (alice, bob):
            page.wait_line("room:lobby", "שלום from carol", nick="carol")

        # The client list: every client with its id, address and port as the server sees it.
        ids = {c.nick: c for c in carol.list_clients()}
        alice.wait(lambda: len(alice.clients()) == 3, "three clients in the list")
        shown = {row[1]: row for row in alice.clients()}
        for nick in ("alice", "bob", "carol"):
            info = ids[nick]
            assert shown[nick] == [str(info.client_id), nick, f"{info.ip}:{info.port}"]

        # Page to page, with the receipt marks: forwarded, then delivered.
        alice.message_client(ids["bob"].client_id)
        alice.say("psst bob")
        bob.wait_line(f"direct:{ids['alice'].client_id}", "psst bob", nick="alice")
        alice.wait_receipt(f"direct:{ids['bob'].client_id}", "psst bob", "delivered")

        # Page to the TCP client, and back.
        bob.message_client(ids["carol"].client_id)
        bob.say("hi carol, bob here")
        direct = next_of(carol, Message)
        assert (direct.room, direct.sender_nick, direct.text) == ("", "bob", "hi carol, bob here")
        bob.wait_receipt(f"direct:{ids['carol'].client_id}", "hi carol, bob here", "delivered")

        sent = carol.send(ids["alice"].client_id, "carol to alice directly")
        # Not the conversation on screen: counted as unread, in the side bar and the title.
        alice.wait(lambda: alice.driver.title == "(1) Switchboard", "the unread count")
        alice.wait_line(f"direct:{ids['carol'].client_id}", "carol to alice directly", nick="carol")
        assert carol.wait_receipt(sent.message_id, timeout=10) == ReceiptStatus.DELIVERED

        # Nickname changes, both ways: the TCP client's shown in the room, the page's heard.
        carol.set_nick("caroline")
        for page in (alice, bob):
            page.wait_line("room:lobby", "is now known as caroline")
        alice.wait(lambda: "caroline" in alice.members(), "the member list to follow")
        bob.find("#change-nick").click()
        bob.type_into("nick", "robert")
        renamed = next_of(carol, NickChanged)
        assert (renamed.old_nick, renamed.new_nick) == ("bob", "robert")
        bob.wait(lambda: bob.text_of("me") == "robert", "the page to show its new name")
        alice.wait_line("room:lobby", "is now known as robert")

        # Leaving: the room goes from the side bar, the others see it.
        bob.open("room:lobby")
        bob.find("#leave-room").click()
        assert next_of(carol, Left).nick == "robert"
        alice.wait_line("room:lobby", "left (#lobby)", nick="robert")
        bob.wait(
            lambda: (
                not bob.js(
                    "return [...document.querySelectorAll('button.conversation')]"
                    ".some(b => b.dataset.key === 'room:lobby')"
                )
            ),
            "the room to leave the side bar",
        )

        # A direct message to a client that is gone is refused, in words.
        carol_id = ids["carol"].client_id
    alice.wait_line("room:lobby", "disconnected (#lobby)", nick="caroline")
    bob.open(f"direct:{carol_id}")
    bob.say("are you there?")
    bob.wait_receipt(f"direct:{carol_id}", "are you there?", "failed")
    assert "Nobody with that id is connected" in bob.error()
    bob.wait(lambda: len(bob.clients()) == 2, "the refusal to refresh the client list")


def test_a_receipt_says_not_delivered_when_the_recipient_leaves_without_acknowledging(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    page = ChatPage(browser_factory(), web_server.url)
    page.login("sender")
    with RawPeer(web_server.port) as mute:  # reads, never ACKs
        mute.send(NickRequest(nick="mute", request_id=1))
        mute.expect(NickOk)
        page.message_client(mute.client_id)
        page.say("will you read this?")
        assert mute.expect(Message).text == "will you read this?"
        page.wait_receipt(f"direct:{mute.client_id}", "will you read this?", "forwarded")
    page.wait_receipt(f"direct:{mute.client_id}", "will you read this?", "not-delivered")


def test_a_nickname_that_is_taken_is_refused_in_words(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    with tcp_client(web_server, "dave"):
        page = ChatPage(browser_factory(), web_server.url)
        page.submit_login("Dave")  # the same name, compared without regard to case
        assert "That nickname is taken" in page.login_error()
        page.login("dave2")
        assert page.text_of("me") == "dave2"


def test_a_server_that_needs_a_token_asks_for_it(
    web_server_factory: Callable[..., WebServerProcess], browser_factory: Browser, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\n", encoding="utf-8")
    server = web_server_factory("--auth-token-file", str(tokens))
    page = ChatPage(browser_factory(), server.url)
    assert not page.shown("token-row")  # not asked for yet
    page.submit_login("gina")
    assert "needs a token" in page.login_error()
    assert page.shown("token-row")
    page.submit_login("gina", "wrong")
    page.wait(lambda: "refused that token" in page.text_of("login-error"), "the refusal")
    page.login("gina", "s3cret-token")
    with Client("127.0.0.1", server.port, token="s3cret-token") as other:
        assert [c.nick for c in other.list_clients()] == ["gina", ""]


def test_the_page_reconnects_after_a_server_restart(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    page = ChatPage(browser_factory(), web_server.url)
    page.login("erin")
    page.join("ops")
    web_server.restart()  # SHUTDOWN, the socket closes, a new server on the same HTTP port
    page.wait(
        lambda: page.js("return document.getElementById('status').dataset.state") == "waiting",
        "the page to notice the server went",
    )
    page.wait(
        lambda: any(
            line["text"].startswith("connection lost: the server is stopping")
            for line in page.lines("room:ops")
        ),
        "the room to say why the connection went",
    )
    page.wait(
        lambda: page.js("return document.getElementById('status').dataset.state") == "open",
        "the page to reconnect",
        timeout=20,
    )
    # Back under the same nickname and in the same room, on the new server.
    with tcp_client(web_server, "watcher") as watcher:
        assert wait_until(
            lambda: [c.nick for c in watcher.list_clients("ops")] == ["erin"], timeout=10
        )
        watcher.join("ops")
        watcher.broadcast("ops", "welcome back")
        page.wait_line("room:ops", "welcome back", nick="watcher")


def test_html_in_a_nickname_and_a_text_is_shown_as_text(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    nick = "<img/src=x/onerror=pwned=1>"
    text = '<b>bold</b><script>window.pwned=2</script><img src=x onerror="window.pwned=3">'
    page = ChatPage(browser_factory(), web_server.url)
    page.login("frank")
    page.join("html")
    with tcp_client(web_server, nick) as mallory:
        mallory.join("html")
        mallory.broadcast("html", text)
        page.wait_line("room:html", text, nick=nick)
        mallory.send(page_client_id(page), text)
        page.wait_line(f"direct:{mallory.client_id}", text, nick=nick)
        page.wait(lambda: any(row[1] == nick for row in page.clients()), "the nickname listed")
    # Shown as the characters they are; nothing became an element, nothing ran.
    assert (
        page.js(
            "return document.querySelectorAll('#lines b, #lines script, #lines img,"
            " #side img, #side b, #members img').length"
        )
        == 0
    )
    assert page.js("return typeof window.pwned") == "undefined"


def page_client_id(page: ChatPage) -> int:
    return int(page.js("return window.switchboardPage.me"))


def test_chinese_emoji_and_right_to_left_text_render_in_their_direction(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    page = ChatPage(browser_factory(), web_server.url)
    page.login("グレース")
    page.join("世界")
    # sent -> (as shown, direction)
    texts = {
        "你好，世界": ("你好，世界", "ltr"),
        "🎉👩‍💻 party": ("🎉👩‍💻 party", "ltr"),
        "שלום עולם": ("שלום עולם", "rtl"),
        "مرحبا بالعالم": ("مرحبا بالعالم", "rtl"),
        "two\nlines\tand a tab": ("two\nlines\tand a tab", "ltr"),
        # Controls that would reorder or recolour the text are shown as escapes, as the
        # terminal clients show them: "gpj.exe" cannot pass for "exe.jpg".
        "file \u202egpj.exe": ("file \\u202egpj.exe", "ltr"),
        "\x1b[31mred": ("\\x1b[31mred", "ltr"),
    }
    with tcp_client(web_server, "زينب") as zainab:
        zainab.join("世界")
        for text in texts:
            zainab.broadcast("世界", text)
        for shown_text, direction in texts.values():
            page.wait_line("room:世界", shown_text, nick="زينب")
            shown = page.js(
                """
                const span = [...document.querySelectorAll('#lines .text')]
                  .find(s => s.textContent === arguments[0]);
                const box = span.getBoundingClientRect();
                const nick = span.parentNode.querySelector('.nick');
                return {rtl: span.matches(':dir(rtl)'), width: box.width,
                        bidi: getComputedStyle(span).unicodeBidi,
                        nickBidi: getComputedStyle(nick).unicodeBidi,
                        escapes: span.querySelectorAll('.escape').length};
                """,
                shown_text,
            )
            assert shown["width"] > 0, shown_text
            assert shown["bidi"] == "plaintext", shown_text  # each line finds its direction
            assert shown["nickBidi"] == "isolate", shown_text  # a name cannot reorder the line
            # dir=auto: the first strong character decides.
            assert shown["rtl"] == (direction == "rtl"), shown_text
            assert shown["escapes"] == shown_text.count("\\"), shown_text
    assert page.text_of("me") == "グレース"


def test_the_page_fits_a_phone_sized_screen(
    web_server: WebServerProcess, browser_factory: Browser
) -> None:
    page = ChatPage(browser_factory(width=390, height=844, phone=True), web_server.url)
    assert not page.shown("composer")  # no conversation yet: nothing to write into
    page.login("phone")
    assert page.js("return window.innerWidth") == 390
    # The side bar is a drawer behind the menu button; opening it shows the join form.
    assert (
        page.js("return getComputedStyle(document.getElementById('menu-button')).display") != "none"
    )
    page.find("#menu-button").click()
    page.wait(
        lambda: page.js("return document.getElementById('side').getBoundingClientRect().left") >= 0,
        "the drawer to open",
    )
    page.join("pocket")  # joining closes the drawer and shows the room
    page.wait(
        lambda: (
            page.js("return document.getElementById('side').getBoundingClientRect().right") <= 0
        ),
        "the drawer to close",
    )
    page.find("#menu-button").click()  # open again, then a tap beside it closes it
    page.wait(
        lambda: page.js("return document.getElementById('side').getBoundingClientRect().left") >= 0,
        "the drawer to open again",
    )
    page.js("document.getElementById('lines').click()")
    page.wait(
        lambda: (
            page.js("return document.getElementById('side').getBoundingClientRect().right") <= 0
        ),
        "a tap beside the drawer to close it",
    )
    page.say("a line long enough to need wrapping on a narrow screen, " * 3)
    page.wait_receipt(
        "room:pocket", "a line long enough to need wrapping on a narrow screen, " * 3, "reached"
    )
    geometry = page.js(
        """
        const composer = document.getElementById('composer').getBoundingClientRect();
        return {scroll: document.documentElement.scrollWidth, width: window.innerWidth,
                composerBottom: composer.bottom, height: window.innerHeight,
                composerRight: composer.right};
        """
    )
    assert geometry["scroll"] <= geometry["width"], geometry  # nothing to scroll sideways
    assert geometry["composerBottom"] <= geometry["height"], geometry  # the composer is visible
    assert geometry["composerRight"] <= geometry["width"], geometry


def test_screenshot_of_a_conversation_is_not_blank(
    web_server: WebServerProcess, browser_factory: Browser, tmp_path: Path
) -> None:
    """The README's picture: a room with a TCP client, Chinese, emoji, right-to-left text and
    a direct message with its receipt.  Written to docs/web.png when SWITCHBOARD_SCREENSHOT=1
    (then committed); each run checks the one taken and the one committed."""
    driver = browser_factory(width=1000, height=620)
    page = ChatPage(driver, web_server.url)
    page.login("alice")
    page.join("lobby")
    with tcp_client(web_server, "bob") as bob, tcp_client(web_server, "李雷") as lilei:
        for client in (bob, lilei):
            client.join("lobby")
        page.say("Good morning! The build is green ✅")
        bob.broadcast("lobby", "Nice. Shipping the web page today 🚀")
        lilei.broadcast("lobby", "你好！我在用浏览器聊天")
        bob.broadcast("lobby", "שלום — right-to-left works too")
        page.wait_line("room:lobby", "שלום — right-to-left works too", nick="bob")
        page.message_client(bob.client_id)
        page.say("lunch at noon?")
        page.wait_receipt(f"direct:{bob.client_id}", "lunch at noon?", "delivered")
        page.open("room:lobby")
        page.wait(lambda: len(page.clients()) == 3, "three clients listed")
        png = driver.get_screenshot_as_png()
    shot = tmp_path / "web.png"
    shot.write_bytes(png)
    assert_not_blank(page, png)
    if os.environ.get("SWITCHBOARD_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(png)
    assert SCREENSHOT.exists(), "docs/web.png is missing: run with SWITCHBOARD_SCREENSHOT=1"
    assert_not_blank(page, SCREENSHOT.read_bytes())
    assert "docs/web.png" in (REPO / "README.md").read_text(encoding="utf-8")


def assert_not_blank(page: ChatPage, png: bytes) -> None:
    """Decoded by the browser itself: many colours, and most rows not one flat colour."""
    stats = page.driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const img = new Image();
        img.onload = () => {
          const canvas = document.createElement('canvas');
          canvas.width = img.width; canvas.height = img.height;
          const ctx = canvas.getContext('2d');
          ctx.drawImage(img, 0, 0);
          const data = ctx.getImageData(0, 0, img.width, img.height).data;
          const colours = new Set();
          let busyRows = 0;
          for (let y = 0; y < img.height; y++) {
            const row = new Set();
            for (let x = 0; x < img.width; x++) {
              const i = (y * img.width + x) * 4;
              const c = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
              colours.add(c); row.add(c);
            }
            if (row.size > 1) busyRows++;
          }
          done({width: img.width, height: img.height, colours: colours.size, busyRows});
        };
        img.onerror = () => done(null);
        img.src = 'data:image/png;base64,' + arguments[0];
        """,
        base64.b64encode(png).decode("ascii"),
    )
    assert stats is not None, "the PNG does not decode"
    assert stats["width"] >= 300 and stats["height"] >= 300, stats
    assert stats["colours"] >= 50, stats  # text, antialiasing, the emoji's colours
    assert stats["busyRows"] >= stats["height"] // 4, stats
