"""The explorer page in a real browser: Debian's chromium, driven by Playwright, against a
real running network (node0 publishes, node1 participates; the e2e tests' tiny circuit).
The page loads without console errors, its block table holds the node's head, its plot
has one point per final block, a click shows a round, and untrusted text stays text.
A screenshot lands in the test's output directory."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Iterator
from html import escape as html_escape
from pathlib import Path
from typing import Any

import pytest

from node.apispec import KEEP_PARENT
from node.explorer import render
from node.tools.testnet import init
from support.e2e_util import Net, small_net

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Net, Path]]:
    root = tmp_path_factory.mktemp("explorer") / "net"
    spec = dataclasses.replace(small_net(2), participants=1, rule="winner")
    init(root, spec)
    n = Net(root, spec)
    for i in range(2):
        n.start(i)
    try:
        yield n, root
    finally:
        n.stop()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (`make test` installs it as root)")
def test_the_page_shows_the_chain_live_in_a_real_browser(net: tuple[Net, Path]) -> None:
    from playwright.sync_api import sync_playwright

    n, root = net
    n.wait_finalized([0, 1], 2, timeout=300)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 1100})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(n.api(0) + "/")
        page.wait_for_function("document.body.dataset.updated !== undefined", timeout=30_000)
        # the block table holds the head the node reports (it may move on: read both)
        for _ in range(10):
            head = n.status(0)["head"]["height"]  # type: ignore[index]
            heights = page.locator("#blocks tbody tr td:first-child").all_text_contents()
            if str(head) in heights:
                break
            time.sleep(1)
            page.wait_for_timeout(3500)  # the next refresh
        assert str(head) in heights, (head, heights)
        assert page.locator("#head-height").text_content() is not None
        # one plot point per final block
        for _ in range(10):
            final = n.status(0)["finalized"]["height"]  # type: ignore[index]
            points = page.locator("#plot").get_attribute("data-points")
            if points == str(final):
                break
            page.wait_for_timeout(3500)
        assert points == str(final), (points, final)
        # a click on a block shows its round as a readable view, not a JSON dump
        page.locator("#blocks tbody tr td:first-child").first.click()
        page.wait_for_selector("#round table.proofs", timeout=10_000)
        verdicts = page.locator("#round table.proofs td:last-child").all_text_contents()
        assert verdicts and all(v == "valid" for v in verdicts), verdicts
        assert "height" in (page.locator("#round p").nth(1).text_content() or "")
        # the proposer is named, and a click on its key shows only its blocks
        key = page.locator("#blocks tbody [data-key]").first
        proposer = key.get_attribute("data-key")
        key.click()
        assert page.locator("#filter-key").text_content() == proposer
        shown = page.locator("#blocks tbody tr").count()
        page.locator("#filter-clear").click()
        assert page.locator("#blocks tbody tr").count() >= shown >= 1
        assert page.locator("#addrs").text_content().endswith(n.status(0)["peer_id"])  # type: ignore[index,union-attr]
        page.screenshot(path=str(root / "explorer.png"), full_page=True)
        # the node goes away: the page says so instead of going quietly stale
        assert not page.locator("#offline").is_visible()
        n.kill9(0)
        page.wait_for_selector("#offline.shown", timeout=15_000)
        assert "node unreachable" in (page.locator("#offline").text_content() or "")
        page.screenshot(path=str(root / "explorer-offline.png"), full_page=True)
        browser.close()
    errors = [e for e in errors if "Failed to fetch" not in e and "ERR_CONNECTION" not in e]
    assert not errors, errors
    assert (root / "explorer.png").stat().st_size > 10_000


def test_untrusted_text_is_escaped_on_the_server() -> None:
    evil = "<script>alert(1)</script>"
    status: dict[str, Any] = {
        "chain_name": evil,
        "chain_id": "ab",
        "role": evil,
        "head": {"height": 1, "round": 0, "hash": evil},
        "finalized": {"height": 0, "hash": "00"},
        "round": 1,
    }
    block = {
        "height": 1, "round": 0, "proposer": evil, "members": [], "score": 3,
        "proofs": [{"k": 3}], "final": False, "hash": evil, "genesis": False,
    }  # fmt: skip
    html = render(status, [block], {"peers": [{"peer_id": evil, "role": evil, "addrs": [evil]}]})
    assert evil not in html
    assert "&lt;script&gt;" in html


def test_a_round_without_an_aggregate_is_labelled_as_such() -> None:
    status: dict[str, Any] = {
        "chain_name": "c", "chain_id": "ab", "role": "observer", "aggregates": True,
        "head": {"height": 2, "round": 1, "hash": "h2"},
        "finalized": {"height": 0, "hash": "00"}, "round": 2,
    }  # fmt: skip
    kept = {
        "height": 1, "round": 0, "proposer": "p" * 64, "members": [], "score": 1,
        "proofs": [{"k": 3}], "final": False, "hash": "h1", "genesis": False,
    }  # fmt: skip
    agg = {**kept, "height": 2, "round": 1, "members": ["a" * 64, "b" * 64], "hash": "h2"}
    html = render(status, [kept, agg], {"peers": []})
    # once in the kept block's row, once in data-keep-parent (the script's copy): the
    # aggregate's row has none
    assert html.count(html_escape(KEEP_PARENT)) == 2
    assert f'data-keep-parent="{html_escape(KEEP_PARENT)}"' in html
    assert "contributors aaaaaaaaaaaa…, bbbbbbbbbbbb…" in html
