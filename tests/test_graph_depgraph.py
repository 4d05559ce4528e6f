"""Dependency graph: the offline matcher, the LLM judges (simulator and messy fake teachers),
save/load, stats, and bad input."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest

from bench.graph_bench import synthetic_pool
from engine.errors import FatalTeacherError, RateLimited, UserInputError
from engine.records import FunctionSpec, Message
from engine.teacher import Completion
from engine.teachers import make_teacher
from graph.depgraph import build_graph, graph_specs, graph_stats, load_graph, save_graph, validate_specs
from graph.judges import JudgeConfig, extract_json, load_prompt, parse_adjacency, parse_nested
from graph.matcher import Matcher, MatcherConfig, name_tokens


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required}


def _p(kind: str, desc: str = "") -> dict[str, Any]:
    return {"type": kind, "description": desc}


def handmade_pool() -> list[FunctionSpec]:
    F = FunctionSpec
    return [
        F(name="search_flights", description="Find flights.", toolkit="travel", category="travel",
          parameters=_obj({"origin": _p("string"), "destination": _p("string")}),
          returns={"type": "array", "items": {"type": "object", "properties": {"flight_id": _p("string"), "price": _p("number")}}}),
        F(name="book_flight", description="Book a flight.", toolkit="travel", category="travel",
          parameters=_obj({"flight_id": _p("string"), "passenger_name": _p("string")}),
          returns=_obj({"booking_id": _p("string"), "total_cost": _p("number")})),
        F(name="cancel_booking", description="Cancel a booking.", toolkit="travel", category="travel",
          parameters=_obj({"bookingId": _p("string")}), returns=_obj({"refund": _p("number")})),
        F(name="pay", description="Pay an amount.", toolkit="bank", category="finance",
          parameters=_obj({"amount": _p("number"), "account_id": _p("string")}), returns=_obj({"transaction_id": _p("string")})),
        F(name="get_distance", description="Distance between two cities.", toolkit="geo", category="geo",
          parameters=_obj({"origin": _p("string"), "destination": _p("string")}), returns={"type": "number", "description": "km"}),
        F(name="set_navigation", description="Start navigation.", toolkit="car", category="vehicle",
          parameters=_obj({"distance": _p("number")}), returns="Returns the route id of the new route."),
        F(name="get_route", description="Details of a route.", toolkit="car", category="vehicle",
          parameters=_obj({"route_id": _p("string")}), returns=_obj({"eta_minutes": _p("integer")})),
        F(name="get_note", description="Read a note.", toolkit="notes", category="notes",
          parameters=_obj({"note_id": _p("integer")}), returns=_obj({"id": _p("integer"), "text": _p("string")})),
        F(name="lookup_airport", description="Airport code of a city.", toolkit="travel", category="travel",
          parameters=_obj({"city": _p("string")}), returns="The code for that city."),
        F(name="airport_delays", description="Delays at an airport.", toolkit="travel", category="travel",
          parameters=_obj({"iata": _p("string", "Code as returned by lookup_airport.")}), returns=_obj({"delay_minutes": _p("integer")})),
    ]


def test_name_tokens_normalise_spellings() -> None:
    assert name_tokens("flight_ids") == name_tokens("flightIds") == name_tokens("Flight-IDs") == ("flight", "id")


def test_matcher_finds_the_intended_edges() -> None:
    graph = build_graph(handmade_pool())
    expected = {
        ("search_flights", "book_flight"),  # exact name
        ("book_flight", "cancel_booking"),  # camelCase parameter
        ("book_flight", "pay"),  # cross-domain, synonym: cost ~ amount
        ("search_flights", "pay"),  # list items' price feeds an amount
        ("get_distance", "set_navigation"),  # a scalar result named after its function
        ("set_navigation", "get_route"),  # prose returns
        ("lookup_airport", "airport_delays"),  # description names the producer
    }
    assert expected <= set(graph.edges)
    assert not graph.has_edge("get_note", "cancel_booking")  # integer note id vs string booking id
    assert not graph.has_edge("search_flights", "get_note")
    assert not any(u == v for u, v in graph.edges)
    edge = graph.edges["search_flights", "book_flight"]
    assert edge["how"] == "matcher" and edge["fields"] == ["flight_id->flight_id"] and edge["score"] == 1.0 and edge["nested"]
    assert graph.edges["lookup_airport", "airport_delays"]["fields"] == ["mentions lookup_airport"]


def test_threshold_is_honoured() -> None:
    strict = build_graph(handmade_pool(), matcher=MatcherConfig(threshold=0.95))
    assert all(d["score"] >= 0.95 for *_, d in strict.edges(data=True))
    assert strict.number_of_edges() < build_graph(handmade_pool()).number_of_edges()


def test_matcher_on_builtin_toolkits() -> None:
    from graph.toolkit import ToolPool
    from graph.toolkits import builtin_toolkits

    graph = build_graph(ToolPool(builtin_toolkits().values()).specs())
    for u, v in [("search_flights", "book_flight"), ("search_products", "add_to_cart"), ("get_distance", "set_navigation"),
                 ("get_coordinates", "get_weather"), ("create_event", "set_reminder")]:
        assert graph.has_edge(u, v), (u, v)
    stats = graph_stats(graph)
    assert stats["nodes"] >= 120 and stats["edges"] > stats["nodes"]


def test_candidates_are_capped_not_quadratic() -> None:
    specs = synthetic_pool(600, per_toolkit=300)  # two huge toolkits: the cap must hold anyway
    cfg = MatcherConfig(same_domain_candidates=12, cross_domain_candidates=5)
    m = Matcher(specs, cfg)
    for f in range(0, 600, 37):
        chosen, found = m.match(f)
        assert len(chosen) <= 17 and len(set(chosen)) == len(chosen) and f not in chosen
        assert all(g in chosen for g, _ in found)


# --- judges -------------------------------------------------------------------------------

MESSY = [
    ('Sure! ```json\n{"book_flight": ["cancel_booking", "pay"]}\n```', ["cancel_booking", "pay"]),
    ("Here you go: {'book_flight': ['pay', 'cancel_booking',],} hope it helps", ["pay", "cancel_booking"]),
    ('{"book_flight": ["pay()", "nonexistent", "book_flight", "PAY"]}', ["pay"]),
    ('["cancel_booking"]', ["cancel_booking"]),
    ('{"related": ["pay"], "note": "x"}', ["pay"]),
    ('{"book_flight": []}', []),
    ('{"cancel_booking": true, "pay": false}', ["cancel_booking"]),
    ('{"book_flight": [{"name": "pay"}]}', ["pay"]),
    ("```\n{\"book_flight\": [\"pay\", null, true]}\n```", ["pay"]),
]


@pytest.mark.parametrize("text,expected", MESSY)
def test_parse_adjacency_messy(text: str, expected: list[str]) -> None:
    assert parse_adjacency(text, "book_flight", ["cancel_booking", "pay", "get_route"]) == expected


@pytest.mark.parametrize("text", ["I think there are none.", "", "{not json at all", "[" * 300_000, '{"a": 1, "b": 2}'],
                         ids=["prose", "empty", "broken", "huge", "no-list"])
def test_parse_adjacency_rejects(text: str) -> None:
    from engine.errors import BadAnswer

    with pytest.raises(BadAnswer):
        parse_adjacency(text, "book_flight", ["pay"])


def test_extract_json_never_evaluates() -> None:
    assert extract_json("{'a': __import__('os').system('echo hi')}") is None
    assert extract_json('text {"a": "}"} more') == {"a": "}"}


@pytest.mark.parametrize("text,nested,reason", [
    ('{"nested": "yes", "reason": "flight_id comes from search"}', True, "flight_id comes from search"),
    ("```json\n{'answer': 'No', 'explanation': 'unrelated'}\n```", False, "unrelated"),
    ('{"nested": true}', True, ""),
    ("Yes. The booking id returned by book_flight is the input.\nMore text", True, "The booking id returned by book_flight is the input."),
    ("no - they share nothing", False, "they share nothing"),
])
def test_parse_nested(text: str, nested: bool, reason: str) -> None:
    verdict = parse_nested(text)
    assert verdict.nested is nested and verdict.reason == reason


class MessyTeacher:
    """A test double of the Teacher protocol that answers like a chatty model."""

    name = "messy-fake"

    def __init__(self, answers: dict[str, str], fail_first: bool = False):
        self.answers = answers
        self.fail_first = fail_first
        self.prompts: list[str] = []

    async def chat(self, messages: list[Message], tools: Any = None, **kw: Any) -> Completion:
        prompt = messages[-1].content or ""
        self.prompts.append(prompt)
        if self.fail_first and len(self.prompts) == 1:
            return Completion(message=Message(role="assistant", content="Let me think about it..."))
        if prompt.startswith("Decide whether"):
            return Completion(message=Message(role="assistant", content="Yes - the output feeds the input."))
        target = next((t for t in self.answers if f'{{"name":"{t}"' in prompt.split("Candidate functions")[0]), None)
        text = self.answers.get(target, "Nothing depends on it: {}") if target else "{}"
        return Completion(message=Message(role="assistant", content=text))

    async def aclose(self) -> None:
        pass


def test_judge_with_messy_teacher_union_and_cache(tmp_path) -> None:
    specs = handmade_pool()
    answers = {"cancel_booking": "Sure!\n```json\n{'cancel_booking': ['lookup_airport', 'cancel_booking', 'made_up',]}\n```"}
    teacher = MessyTeacher(answers, fail_first=True)
    cfg = JudgeConfig(cache_dir=str(tmp_path / "cache"), concurrency=3)
    graph = build_graph(specs, teacher, judge=cfg)
    assert graph.edges["cancel_booking", "lookup_airport"]["how"] == "judge"
    assert not graph.has_edge("cancel_booking", "cancel_booking")
    assert graph.has_edge("search_flights", "book_flight")  # union keeps the matcher's edges
    asked = sum(1 for f in range(len(specs)) if Matcher(specs).match(f)[0])  # functions with candidates
    info = graph.graph["judge"]
    assert info["failed"] == 0 and info["calls"] == asked + 1  # one retry after the unparsable first answer
    again = MessyTeacher(answers)
    rebuilt = build_graph(specs, again, judge=cfg)
    assert again.prompts == [] and rebuilt.graph["judge"]["cached"] == asked
    assert set(rebuilt.edges) == set(graph.edges)


def test_judge_replace_mode_and_nested(tmp_path) -> None:
    specs = handmade_pool()
    teacher = MessyTeacher({"search_flights": '{"search_flights": []}'})
    cfg = JudgeConfig(cache_dir=str(tmp_path), mode="replace", nested=True)
    graph = build_graph(specs, teacher, judge=cfg)
    assert not graph.has_edge("search_flights", "book_flight")  # the judge said no
    assert all(d["nested"] and d["nested_by"] == "judge" for *_, d in graph.edges(data=True))
    assert all(d["nested_reason"] == "the output feeds the input." for *_, d in graph.edges(data=True))


def test_judge_with_simulator_teacher(tmp_path) -> None:
    specs = handmade_pool()
    graph = build_graph(specs, make_teacher("sim"), judge=JudgeConfig(cache_dir=str(tmp_path), nested=True))
    judged = [(u, v) for u, v, how in graph.edges(data="how") if "judge" in how]
    assert judged  # the simulator answers schema-valid JSON naming candidates: parsed into edges
    assert graph.graph["judge"]["failed"] == 0
    assert all(u != v for u, v in judged)
    assert all(d.get("nested_by") == "judge" for *_, d in graph.edges(data=True))


class FlakyTeacher(MessyTeacher):
    """Rate-limited on the first call, then an auth failure once ``fatal`` is set."""

    name = "flaky-fake"

    def __init__(self, fatal: bool = False):
        super().__init__({})
        self.fatal = fatal

    async def chat(self, messages: list[Message], tools: Any = None, **kw: Any) -> Completion:
        if self.fatal:
            raise FatalTeacherError("401 unauthorized")
        if not self.prompts:
            self.prompts.append("429")
            raise RateLimited("slow down", retry_after=0.01, status=429)
        return await super().chat(messages, tools, **kw)


def test_judge_retries_transient_errors_and_stops_on_fatal(tmp_path) -> None:
    graph = build_graph(handmade_pool(), FlakyTeacher(), judge=JudgeConfig(use_cache=False))
    assert graph.graph["judge"]["failed"] == 0
    with pytest.raises(FatalTeacherError):
        build_graph(handmade_pool(), FlakyTeacher(fatal=True), judge=JudgeConfig(use_cache=False))


def test_prompts_dir_override(tmp_path) -> None:
    (tmp_path / "dependency.txt").write_text("CUSTOM $target_name\n$target\n$candidates\n")
    teacher = MessyTeacher({})
    build_graph(handmade_pool()[:3], teacher, judge=JudgeConfig(prompts_dir=str(tmp_path), use_cache=False))
    assert teacher.prompts and all(p.startswith("CUSTOM ") for p in teacher.prompts)
    (tmp_path / "nested.txt").write_text("no placeholders here")
    with pytest.raises(UserInputError, match=r"\$first"):
        load_prompt("nested.txt", str(tmp_path))
    with pytest.raises(UserInputError, match="not a folder"):
        load_prompt("nested.txt", str(tmp_path / "missing"))


# --- save / load / stats --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["g.json", "g.json.gz"])
def test_save_load_round_trip(tmp_path, name: str) -> None:
    specs = handmade_pool()
    graph = build_graph(specs)
    path = save_graph(graph, tmp_path / name)
    back = load_graph(path)
    assert list(back.nodes) == list(graph.nodes)
    assert dict(back.edges.items()) == dict(graph.edges.items())
    assert graph_specs(back) == specs
    assert graph_stats(back) == graph_stats(graph)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_stats_counts_isolated_and_components() -> None:
    stats = graph_stats(build_graph(handmade_pool()))
    assert stats["nodes"] == 10
    assert "get_note" in stats["isolated_examples"] and stats["isolated"] >= 1
    assert stats["weak_components"] >= 2 and stats["largest_component"] <= 10
    assert sum(stats["out_degree_histogram"].values()) == 10


def test_malformed_graph_files(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    cases = [
        (b"not json", "not valid JSON"),
        (b'{"nodes": []}', "not a magnet graph"),
        (orjson.dumps({"graph": {"format": "magnet-graph"}, "nodes": {}, "edges": []}), "must be lists"),
        (orjson.dumps({"graph": {"format": "magnet-graph"}, "nodes": [{"x": 1}], "edges": []}), "no string 'id'"),
        (orjson.dumps({"graph": {"format": "magnet-graph"}, "nodes": [{"id": "a", "parameters": 3}], "edges": []}), "not a valid function spec"),
        (orjson.dumps({"graph": {"format": "magnet-graph"}, "nodes": [{"id": "a", "description": "", "parameters": {}}],
                      "edges": [{"source": "a", "target": "zz"}]}), "unknown node"),
        (gzip.compress(b"{")[:10], "not valid JSON"),
    ]
    for raw, message in cases:
        bad.write_bytes(raw)
        with pytest.raises(UserInputError, match=message):
            load_graph(bad)
    with pytest.raises(UserInputError, match="not found"):
        load_graph(tmp_path / "missing.json")


def test_bad_pools(tmp_path) -> None:
    pool = handmade_pool()
    with pytest.raises(UserInputError, match="empty"):
        validate_specs([])
    with pytest.raises(UserInputError, match="duplicate function name 'pay'"):
        build_graph(pool + [pool[3]])
    with pytest.raises(UserInputError, match="'broken'.*parameters"):
        build_graph([FunctionSpec(name="broken", description="", parameters={"properties": []})])
    with pytest.raises(UserInputError, match="empty name"):
        validate_specs([FunctionSpec(name=" ", description="", parameters={})])
    from graph.cli import graph_main

    build = ["build", "--toolkits", "travel", "--out", str(tmp_path / "g.json.gz")]
    with pytest.raises(UserInputError, match="threshold"):
        graph_main([*build, "--threshold", "3.0"])
    with pytest.raises(UserInputError, match="concurrency"):
        graph_main([*build, "--concurrency", "0"])
