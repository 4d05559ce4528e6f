"""`magnet view` on a run of 1,000,000 trajectories: Chromium pages through it while the index is
still being built, and the server's memory stays a small fraction of the shards.

Asserts behaviour (the right records on every page, an index of bounded size), not timing: the
first-page time is measured by bench/view_paging.py (bench/results/view_paging.md).
"""

from __future__ import annotations

import json
import time
import urllib.request
from urllib.parse import urlencode

import pytest
from _chromium import Browser, browser_fixture  # noqa: F401 - the `browser` fixture

from bench.view_paging import NEEDLE_EVERY, TEACHERS, Server, trajectory, write_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RECORDS = 1_000_000


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("view-large") / "run"
    written = write_run(run, RECORDS)
    return run, written


def _ids(browser: Browser) -> list[str]:
    return browser.eval("[...document.querySelectorAll('table.records tbody tr td:nth-child(2) a')].map(a => a.textContent)")


def _want(indices) -> list[str]:
    return [trajectory(i).id for i in indices]


def test_paging_a_million_records(big_run, browser):
    run, written = big_run
    with Server(run) as server:
        # Cold server: nothing is indexed when the first page is asked for.
        browser.goto(server.url + "/list/trajectories")
        assert _ids(browser) == _want(range(50))
        for k in (1, 2, 3):
            browser.click("#next")
            assert _ids(browser) == _want(range(50 * k, 50 * k + 50))
        browser.click("#prev")
        assert _ids(browser) == _want(range(100, 150))
        browser.goto(server.url + "/list/trajectories?" + urlencode({"teacher": TEACHERS[2], "polarity": "negative"}))
        assert _ids(browser) == _want([i for i in range(300) if i % 6 == 5][:50])
        browser.goto(server.url + "/list/trajectories?q=ZANZIBAR")
        found = _ids(browser)
        while browser.eval("document.getElementById('next') !== null") and len(found) < 60:
            browser.click("#next")  # a search out of time offers to go on from where it stopped
            found += _ids(browser)
        assert found[:50] == _want(range(7, RECORDS, NEEDLE_EVERY))[:50]

        deadline = time.monotonic() + 600
        while True:
            with urllib.request.urlopen(server.url + "/api/index", timeout=60) as r:
                stats = json.load(r)["trajectories"]
            if stats["complete"] or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert stats["complete"] and stats["records"] == RECORDS
        # The index is a few compact arrays: well under 100 bytes per record (the records average
        # ~850 bytes of shard), and the whole server stays far below the shards' size.
        assert stats["index_bytes"] / RECORDS <= 64
        assert server.rss_bytes() < 400 << 20 < written["shard_bytes"] // 2

        browser.goto(server.url + f"/list/trajectories?start={RECORDS - 50}")
        assert _ids(browser) == _want(range(RECORDS - 50, RECORDS))
        assert browser.eval("document.getElementById('next')") is None
        assert browser.eval("document.getElementById('total').textContent").startswith(f"{RECORDS:,} matching")
        browser.goto(server.url + "/list/trajectories?" + urlencode({"stratum": "multi_turn.long", "function": "math_op_3",
                                                                    "start": 500_000}))
        assert _ids(browser) == _want([i for i in range(500_000, 600_000) if i % 10 == 7 and i % 7 == 4 and i % 13 == 3][:50])
        middle = trajectory(RECORDS // 2)
        browser.goto(server.url + "/record/trajectories?" + urlencode({"id": middle.id, "mode": "stored"}))
        assert browser.eval("document.querySelector('.msg.user pre').textContent") == middle.messages[0].content
