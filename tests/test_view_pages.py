"""`magnet view` end to end: a real run (the simulator teacher), a real server subprocess, a real
headless Chromium reading the DOM; an XSS run; the server's read-only and loopback guards.

Screenshots go to $MAGNET_VIEW_SHOTS when set (the README's come from there), else to tmp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from _chromium import Browser, browser_fixture  # noqa: F401 - the `browser` fixture

from bench.view_paging import Server, trajectory
from engine.records import DeadLetter, FunctionSpec, Message, PathTurn, PreferencePair, SignaturePath, ToolCall, Trajectory, Verification
from engine.render import render, render_pair, split_pair
from engine.store import RunStore, read_records

pytestmark = pytest.mark.browser

XSS = ['<script>window.__xss=1</script>', '<img src=x onerror="window.__xss=2">', '"><svg onload=window.__xss=3>',
       "' onmouseover='window.__xss=4"]
PAYLOAD = " ".join(XSS)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MAGNET_VIEW_SHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("view-sim") / "run"
    subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--teacher", "sim", "--out", str(run), "--paths", "20",
                    "--no-progress", "--card-tokenizer", ""], check=True, capture_output=True, timeout=300)
    return run


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    """Reports as the commands write them: BFCL reports from `magnet eval bfcl` (the ground-truth
    replay model, per round folder), a `magnet eval paths` report (the simulator), a training
    metrics.jsonl (as train/loop.py writes it) and a rounds.json (the shape `magnet improve` is to write)."""
    root = tmp_path_factory.mktemp("view-reports")
    for n in (1, 2):
        subprocess.run([sys.executable, "-m", "engine.cli", "eval", "bfcl", "--model", "replay", "--categories", "simple",
                        "--limit", str(n), "--out", str(root / f"round-{n}" / "bfcl"), "--no-progress"],
                       check=True, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "engine.cli", "eval", "paths", "--out", str(root / "paths-eval"), "--model", "sim",
                    "--author", "sim", "--per-kind", "2", "--no-progress"], check=True, capture_output=True, timeout=300)
    (root / "train").mkdir()
    rows = [{"step": s, "epoch": s / 10, "loss": 2.0 / s, "reward_margin": 0.1 * s, "lr": 1e-5} for s in range(1, 11)]
    (root / "train" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "improve").mkdir()
    rounds = [{"round": i, "categories": {"simple": {"accuracy": 0.4 + 0.1 * i}, "multi_turn_base": 0.2 + 0.05 * i}} for i in range(3)]
    (root / "improve" / "rounds.json").write_text(json.dumps({"rounds": rounds}))
    return root


@pytest.fixture(scope="module")
def server(sim_run, reports):
    with Server(sim_run, "--reports", str(reports)) as s:
        yield s


def _xss_trajectory(polarity: str, answer: str) -> Trajectory:
    call = ToolCall(name="get_weather", arguments={"city": PAYLOAD}, id="call_x")
    return Trajectory(
        id=f"xss-{polarity}-{XSS[1]}", episode_id="ep-single-0-666", polarity=polarity,
        tools=[FunctionSpec(name="get_weather", description=PAYLOAD, toolkit=XSS[2],
                            parameters={"type": "object", "properties": {"city": {"type": "string", "description": PAYLOAD}}})],
        messages=[Message(role="user", content=PAYLOAD), Message(role="assistant", tool_calls=[call]),
                  Message(role="tool", content=json.dumps({"note": PAYLOAD}), tool_call_id="call_x", name="get_weather"),
                  Message(role="assistant", content=answer + PAYLOAD)],
        teacher=PAYLOAD, hints=[PAYLOAD], source=XSS[3], error_types=[] if polarity == "positive" else [PAYLOAD],
        verification=Verification(ok=polarity == "positive", errors=[] if polarity == "positive" else [f"turn 0: {PAYLOAD}"]),
    )


@pytest.fixture(scope="module")
def xss_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("view-xss") / "run"
    good, bad = _xss_trajectory("positive", "fine "), _xss_trajectory("negative", "wrong ")
    with RunStore.open(run, config_fingerprint="xss", config={"note": PAYLOAD}) as store:
        store.put("paths", SignaturePath(id="single-0-666", kind="single", turns=[PathTurn(functions=["get_weather", XSS[1]])],
                                         toolkits=[XSS[0]], distractors=[XSS[2]]))
        store.put("trajectories", good)
        store.put("trajectories", bad)
        store.put("pairs", PreferencePair(id=f"xss-pair-{XSS[2]}", episode_id="ep-single-0-666", chosen=good, rejected=bad))
        store.put("dead_letters", DeadLetter(id=f"xss-dl-{XSS[0]}", item_id="single-0-667", stage=XSS[1],
                                             error=f"BadAnswer: unparsable tool call: {PAYLOAD!r}", item={"id": PAYLOAD}))
    return run


def _rows(browser: Browser) -> list[str]:
    """Record ids in the list table, in order."""
    return browser.eval("[...document.querySelectorAll('table.records tbody tr td:nth-child(2) a')].map(a => a.textContent)")


def _text(browser: Browser, selector: str) -> str:
    return browser.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")


def test_overview_shows_counts_the_data_card_and_dead_letter_reasons(browser, server, sim_run, shots):
    manifest = json.loads((sim_run / "manifest.json").read_text())
    summary = json.loads((sim_run / "generate_summary.json").read_text())
    browser.goto(server.url + "/")
    for kind in ("trajectories", "pairs", "paths", "episodes", "dead_letters"):
        assert _text(browser, f'[data-count="{kind}"]').replace(",", "") == str(manifest["counts"][kind])
    assert browser.eval("document.querySelectorAll('#strata tbody tr').length") == len(summary["data_card"]["strata"])
    assert browser.eval("document.querySelectorAll('#mixture tbody tr').length") == len(summary["data_card"]["mixture_pct"])
    assert browser.eval("document.querySelectorAll('#dead-reasons tbody tr').length") == len(summary["dead_letters_by_reason"])
    assert _text(browser, '[data-summary="prompt_tokens"]').replace(",", "") == str(summary["prompt_tokens"])
    commit = (manifest["code_version"].get("git_commit") or "")[:12]
    assert commit in browser.eval("document.body.textContent")
    assert browser.eval("document.getElementById('live')") is None  # a finished run: no live banner
    assert browser.screenshot(shots / "view_overview.png").stat().st_size > 10_000


def test_records_list_filters_pages_and_searches(browser, server, sim_run, shots):
    stored = [t for t in read_records(sim_run, "trajectories")]
    browser.goto(server.url + "/list/trajectories")
    assert _rows(browser) == [t.id for t in stored]  # 46 < one page: all, in write order
    # Filter through the form as a user would: pick a value, press the button.
    browser.eval("document.querySelector('select[name=polarity]').value = 'positive'")
    browser.click("form.filters button")
    assert "polarity=positive" in browser.eval("location.search")
    assert _rows(browser) == [t.id for t in stored if t.polarity == "positive"]
    browser.goto(server.url + "/list/trajectories?" + urlencode({"path_kind": "multi_turn", "verified": "failed"}))
    assert _rows(browser) == [t.id for t in stored if t.episode_id.startswith("ep-multi_turn") and not t.verification.ok]
    target = stored[5]
    words = target.messages[0].content.split()[:6]
    browser.goto(server.url + "/list/trajectories?" + urlencode({"q": " ".join(words).upper()}))
    assert target.id in _rows(browser)
    phrase = " ".join(words).lower()
    listed = set(_rows(browser))
    # every listed record holds the phrase somewhere in its text (the search reads every message)
    assert all(any(phrase in " ".join((m.content or "").split()).lower() for m in t.messages) for t in stored if t.id in listed)
    browser.goto(server.url + "/list/trajectories?" + urlencode({"q": "no such words in any record"}))
    assert browser.eval("document.getElementById('no-match') !== null")
    assert browser.screenshot(shots / "view_list.png").stat().st_size > 10_000


def _miss_func_positive(run: Path) -> Trajectory:
    """A multi-turn positive whose functions are added back at a later turn (turn_tools grows)."""
    return next(t for t in read_records(run, "trajectories") if t.polarity == "positive" and len(t.turn_tools) > 1
                and len(set(map(len, t.turn_tools))) > 1)


def test_conversation_view_in_prompt_fc_and_stored_form(browser, server, sim_run, shots):
    traj = _miss_func_positive(sim_run)
    base = server.url + "/record/trajectories?" + urlencode({"id": traj.id})
    browser.goto(base)
    roles = browser.eval("[...document.querySelectorAll('.conversation .msg')].map(m => m.dataset.role)")
    prompt = render(traj, "prompt")[0].messages
    assert roles == [m.role for m in prompt] and roles[0] == "system"
    contents = browser.eval("[...document.querySelectorAll('.conversation .msg:not(.system) > pre')].map(p => p.textContent)")
    assert contents == [m.content for m in prompt[1:] if m.content]
    hints = browser.eval("[...document.querySelectorAll('.hint pre')].map(p => p.textContent)")
    assert hints == traj.hints  # one per user turn, beside its turn, not among the messages
    assert not any(h in (m.content or "") for h in traj.hints for m in prompt)
    added = next(i for i in range(1, len(traj.turn_tools)) if set(traj.turn_tools[i]) - set(traj.turn_tools[i - 1]))
    back = browser.eval(f"document.querySelector('section.turn[data-turn=\"{added}\"] .offered').textContent")
    for name in set(traj.turn_tools[added]) - set(traj.turn_tools[added - 1]):
        assert f"{name} (added back)" in back
    assert browser.eval("document.querySelectorAll('.verify').length") == len(traj.hints)
    assert browser.eval("document.querySelectorAll('[data-check=reference] .pill.bad').length") == 0  # a verified positive
    browser.screenshot(shots / "view_conversation.png")

    browser.goto(base + "&mode=fc")
    fc = render(traj, "fc")[-1].messages
    assert browser.eval("[...document.querySelectorAll('.conversation .msg')].map(m => m.dataset.role)") == [m.role for m in fc]
    calls = sum(len(m.tool_calls) for m in fc)
    assert browser.eval("document.querySelectorAll('.conversation .call').length") == calls > 0
    assert browser.eval("document.querySelector('.tabs a.on').textContent") == "fc mode"

    browser.goto(base + "&mode=stored")
    names = browser.eval("[...document.querySelectorAll('.conversation .call .fn')].map(e => e.textContent)")
    assert names == [c.name for m in traj.messages for c in m.tool_calls]


@pytest.mark.parametrize("mode", ["stored", "prompt", "fc"])
def test_pair_view_aligns_the_sides_and_marks_where_they_part(browser, server, sim_run, shots, mode):
    pair = next(p for p in read_records(sim_run, "pairs") if p.id.startswith("ep-multi_turn.long"))
    prefix, chosen_rest, rejected_rest = split_pair(pair)
    browser.goto(server.url + "/record/pairs?" + urlencode({"id": pair.id, "mode": mode}))
    part = browser.eval("(() => { const c = document.getElementById('parting'); const r = c.nextElementSibling;"
                        " return {c: c.dataset.chosen, r: r.dataset.rejected, cls: r.className,"
                        " shared: document.querySelectorAll('.row-shared[data-shared]').length,"
                        " before: [...document.querySelectorAll('.pair > *')].indexOf(c)} })()")
    assert "parting" in part["cls"]
    c_start = int(part["c"].split("-")[0])
    if mode == "stored":
        assert c_start == len(prefix) == int(part["r"].split("-")[0])
        first_c = browser.eval("document.querySelector('#parting .msg')?.textContent")
        first_r = browser.eval("document.querySelector('#parting + .side-rejected .msg')?.textContent")
        assert all(c.name in first_c for c in chosen_rest[0].tool_calls)
        assert (rejected_rest[0].content or "") in first_r and all(c.name in first_r for c in rejected_rest[0].tool_calls)
    elif mode == "prompt":
        cut = render_pair(pair, "prompt")
        assert c_start == len(cut.prompt)  # the shared prompt, system message included, is shown once
        assert browser.eval("document.querySelector('#parting .msg pre').textContent") == cut.chosen.content
        assert browser.eval("document.querySelector('#parting + .side-rejected .msg pre').textContent") == cut.rejected.content
    # Everything above the parting block is shared (shown once, full width).
    rows_before = browser.eval(f"[...document.querySelectorAll('.pair > *')].slice(2, {part['before']})"
                               ".every(e => e.classList.contains('row-shared'))")
    assert rows_before
    assert browser.eval("[...document.querySelectorAll('.error-types .pill')].map(p => p.textContent)") == pair.rejected.error_types
    if mode == "prompt":
        browser.eval("document.getElementById('parting').scrollIntoView()")
        browser.screenshot(shots / "view_pair.png")


def test_dead_letters_are_listed_and_quoted(browser, server, sim_run):
    letters = list(read_records(sim_run, "dead_letters"))
    browser.goto(server.url + "/list/dead_letters")
    assert _rows(browser) == [d.id for d in letters]
    stage = letters[0].stage
    browser.goto(server.url + "/list/dead_letters?" + urlencode({"stage": stage}))
    assert _rows(browser) == [d.id for d in letters if d.stage == stage]
    dl = max(letters, key=lambda d: len(d.error))
    browser.goto(server.url + "/record/dead_letters?" + urlencode({"id": dl.id}))
    assert _text(browser, "#dl-error") == dl.error  # whole, with the model text it quotes


def test_path_view_draws_the_path_and_its_graph_neighbourhood(browser, server, sim_run, shots):
    path = next(p for p in read_records(sim_run, "paths") if p.kind == "multi_turn")
    browser.goto(server.url + "/record/paths?" + urlencode({"id": path.id}))
    drawn = browser.eval("[...document.querySelectorAll('#path-svg g[data-function]')].map(g => g.dataset.function)")
    assert drawn == [f for t in path.turns for f in t.functions]
    size = browser.eval("(() => { const i = document.getElementById('graph-img'); return [i.complete, i.naturalWidth, i.naturalHeight] })()")
    assert size[0] and size[1] > 200 and size[2] > 200  # the PNG from graph/viz.py loaded
    browser.screenshot(shots / "view_path.png")


def test_reports_page_charts_rounds_training_and_evaluations(browser, server, reports, shots):
    browser.goto(server.url + "/reports")
    headings = browser.eval("[...document.querySelectorAll('h2.report')].map(h => h.textContent)")
    assert sum(h.startswith("BFCL: replay") for h in headings) == 2 and "training metrics" in headings
    # rounds.json wins over the round-N folders: its 2 categories over 3 rounds.
    assert browser.eval("document.querySelectorAll('#rounds-chart polyline').length") == 2
    assert browser.eval("document.querySelectorAll('#rounds-chart circle').length") == 6
    assert browser.eval("[...document.querySelectorAll('.metric-chart')].map(c => c.dataset.metric)") == ["loss", "reward_margin"]
    assert browser.eval("document.querySelector('.metric-chart polyline').getAttribute('points').split(' ').length") == 10
    paths_eval = json.loads((reports / "paths-eval" / "report.json").read_text())
    assert f"evaluation: {paths_eval['model']}" in headings
    kinds = browser.eval("[...document.querySelectorAll('table')].find(t => t.querySelector('th')?.textContent === 'path kind')"
                         "?.querySelectorAll('tbody tr').length")
    assert kinds == len(paths_eval["by_kind"])
    browser.screenshot(shots / "view_reports.png")


def test_model_text_is_escaped_everywhere(browser, xss_run, shots):
    """Every page showing the hostile strings shows them as text: no script element, no event
    attribute, nothing ran, and the literal text is on the page."""
    with Server(xss_run) as s:
        pages = ["/", "/reports", "/list/trajectories", "/list/pairs", "/list/paths", "/list/dead_letters",
                 "/list/trajectories?" + urlencode({"q": XSS[0]}), "/list/trajectories?" + urlencode({"teacher": PAYLOAD}),
                 "/record/paths?" + urlencode({"id": "single-0-666"}),
                 "/record/dead_letters?" + urlencode({"id": f"xss-dl-{XSS[0]}"})]
        for mode in ("prompt", "fc", "stored"):
            pages += [f"/record/trajectories?id={quote(_xss_trajectory(p, '').id, safe='')}&mode={mode}" for p in ("positive", "negative")]
            pages.append(f"/record/pairs?id={quote(f'xss-pair-{XSS[2]}', safe='')}&mode={mode}")
        for page in pages:
            browser.goto(s.url + page)
            found = browser.eval("""(() => ({
                scripts: document.querySelectorAll('script').length,
                handlers: [...document.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))
                          .filter(n => n.startsWith('on')),
                svg_in_text: document.querySelectorAll('main svg[onload], main img[src=x]').length,
                ran: window.__xss ?? null,
                text: document.body.textContent}))()""")
            assert (found["scripts"], found["handlers"], found["svg_in_text"], found["ran"]) == (0, [], 0, None), page
            if page != "/reports":
                assert any(x in found["text"] for x in XSS), page
        browser.goto(s.url + "/record/trajectories?" + urlencode({"id": _xss_trajectory("negative", "").id, "mode": "stored"}))
        assert PAYLOAD in browser.eval("document.querySelector('.conversation .msg.user pre').textContent")
        browser.screenshot(shots / "view_xss.png")
        browser.goto(s.url + "/reports")
        assert browser.eval("document.getElementById('no-reports') !== null")  # no reports: a page that says so


def _status(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"x" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def test_read_only_loopback_and_no_scripts_allowed(server, sim_run):
    assert server.url.startswith("http://127.0.0.1:")
    before = {p: p.stat().st_mtime_ns for p in sim_run.rglob("*") if p.is_file()}
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert _status(server.url + "/", method)[0] == 405
        assert _status(server.url + "/list/trajectories", method)[0] == 405
    status, headers = _status(server.url + "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "http" not in csp  # no script, nothing from outside
    assert headers["X-Content-Type-Options"] == "nosniff"
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own Host: refused.
    assert _status(server.url + "/", headers={"Host": "attacker.example"})[0] == 421
    assert _status(server.url + "/record/trajectories?id=nope")[0] == 404
    assert _status(server.url + "/list/trajectories?start=abc")[0] == 400
    for page in ("/", "/list/pairs", "/reports", "/api/index"):
        _status(server.url + page)
    assert {p: p.stat().st_mtime_ns for p in sim_run.rglob("*") if p.is_file()} == before  # viewing wrote nothing


def test_a_run_being_written_shows_live_progress(tmp_path):
    run = tmp_path / "live"
    store = RunStore.open(run, config_fingerprint="live", config={"paths": 10}, durability="close")
    try:
        for i in range(6):
            store.put("trajectories", trajectory(i))
        store.flush()
        with Server(run) as s:
            with urllib.request.urlopen(s.url + "/", timeout=30) as r:
                page = r.read().decode()
            assert 'id="live"' in page and 'http-equiv="refresh"' in page
            assert "3 of 10 wanted" in page  # 3 positives among the 6 trajectories stored so far
        store.close()
        with Server(run) as s, urllib.request.urlopen(s.url + "/", timeout=30) as r:
            assert 'id="live"' not in r.read().decode()
    finally:
        store.close()
