"""Adapters: users' Python classes and modules, BFCL's eight API classes (renamed or not),
OpenAI JSON specs with simulated execution and a response cache, and every validation rule."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from pathlib import Path
from typing import Literal, Optional, TypedDict

import pytest

from engine.errors import BadAnswer, UserInputError
from engine.records import ToolCall
from engine.teachers import make_teacher
from graph.adapters import (
    BFCL_CLASSES,
    bfcl_pool,
    bfcl_toolkits,
    rename_map,
    rewrite_descriptions,
    spec_toolkit,
    toolkit_from_class,
    toolkit_from_module,
)
from graph.bfcl_tools import _package_dir
from graph.toolkit import ToolPool
from graph.toolkits import builtin_toolkits


class Receipt(TypedDict):
    """order_id: Id of the new order.
    total: Amount charged."""

    order_id: str
    total: float


class Bakery:
    """A user's own tool class: plain Python, state in attributes."""

    def __init__(self) -> None:
        self.stock = {"bagel": 5, "croissant": 2}
        self.orders: list[dict] = []

    def order(self, item: Literal["bagel", "croissant"], quantity: int = 1, note: Optional[str] = None) -> Receipt:
        """Order pastries.

        Args:
            item: What to buy.
            quantity: How many.
            note: Message for the baker.

        Returns:
            The receipt.
        """
        if self.stock[item] < quantity:
            return {"error": f"only {self.stock[item]} {item} left"}  # type: ignore[return-value]
        self.stock[item] -= quantity
        self.orders.append({"item": item, "quantity": quantity, "note": note})
        return Receipt(order_id=f"O{len(self.orders)}", total=2.5 * quantity)

    def average_price(self, prices: list[float]) -> float:
        """Average of prices.

        Args:
            prices: Prices in USD.
        """
        return sum(prices) / len(prices)


# ----------------------------------------------------------------------------- Python classes


def test_user_class_becomes_an_executable_stateful_toolkit():
    tk_cls = toolkit_from_class(Bakery)
    specs = {s.name: s for s in tk_cls.specs()}
    assert set(specs) == {"order", "average_price"}
    order = specs["order"]
    assert order.description == "Order pastries."
    assert order.parameters["properties"]["item"] == {"type": "string", "enum": ["bagel", "croissant"], "description": "What to buy."}
    assert order.parameters["properties"]["quantity"]["default"] == 1
    assert order.parameters["required"] == ["item"]
    assert set(order.returns["properties"]) == {"order_id", "total"} and order.returns["description"] == "The receipt."
    assert order.source == f"python:{__name__}" and order.toolkit == "Bakery"

    tk = tk_cls()
    ok = tk.execute(ToolCall(name="order", arguments={"item": "croissant", "quantity": "2"}))
    assert ok.ok and ok.output == {"order_id": "O1", "total": 5.0}
    assert tk.snapshot()["stock"]["croissant"] == 0
    out_of_stock = tk.execute(ToolCall(name="order", arguments={"item": "croissant"}))
    assert not out_of_stock.ok and "only 0 croissant left" in out_of_stock.error
    crash = tk.execute(ToolCall(name="average_price", arguments={"prices": []}))
    assert not crash.ok and "ZeroDivisionError" in crash.error  # a bug in the tool is an error result, not a crash
    # Rebuilt from a state dict (attributes), the instance starts from that state.
    again = tk_cls(state={"stock": {"bagel": 0, "croissant": 9}})
    assert again.execute(ToolCall(name="order", arguments={"item": "croissant", "quantity": 9})).ok
    assert not again.execute(ToolCall(name="order", arguments={"item": "bagel"})).ok


def test_module_path_and_module_object(tmp_path: Path):
    path = tmp_path / "my_tools.py"
    path.write_text(textwrap.dedent('''
        from __future__ import annotations
        from typing import TypedDict

        class Temp(TypedDict):
            """celsius: Temperature."""
            celsius: float

        class ThermoError(Exception):
            pass

        class Thermostat:
            def __init__(self, target: float = 20.0):
                self.target = target

            def set_target(self, celsius: float) -> Temp:
                """Set the target temperature.

                Args:
                    celsius: Degrees Celsius.
                """
                self.target = celsius
                return {"celsius": celsius}

        class Clock:
            def now(self) -> str:
                """The time."""
                return "12:00"
    '''))
    toolkits = toolkit_from_module(path)
    assert sorted(t.toolkit_name() for t in toolkits) == ["Clock", "Thermostat"]
    rt = ToolPool(toolkits).instantiate()
    assert rt.execute(ToolCall(name="set_target", arguments={"celsius": 22})).output == {"celsius": 22.0}
    assert rt.snapshot()["Thermostat"] == {"target": 22.0}
    assert rt.execute(ToolCall(name="now")).output == "12:00"
    import graph.toolkits.mathunits as module

    assert [t.toolkit_name() for t in toolkit_from_module(module)] == ["math"]
    assert [t.toolkit_name() for t in toolkit_from_module("graph.toolkits.notes")] == ["notes"]


@pytest.mark.parametrize(("src", "named"), [
    ('class A:\n    def f(self, x) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.x: .*no type hint"),
    ('class A:\n    def f(self, x: str = object()) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.x: default .* not JSON-serializable"),
    ('class A:\n    def f(self, x: complex) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.x: type .* has no JSON Schema"),
    ('class A:\n    def f(self, x: Literal[1, "a"]) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.x: Literal values"),
    ('class A:\n    def f(self, x: dict[int, str]) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.x: dict keys must be str"),
    ('class A:\n    def f(self, x: int) -> int:\n        return 1\n', r"A\.f: no docstring"),
    ('class A:\n    def f(self, *xs: int) -> int:\n        """Doc."""\n        return 1\n', r"A\.f\.xs: \*args"),
    ('class A:\n    def __init__(self, db: str):\n        self.db = db\n    def f(self) -> int:\n        """Doc."""\n        return 1\n',
     r"A\.__init__\.db: the constructor must work without arguments"),
    ('class A:\n    def _private(self) -> int:\n        return 1\n', r"defines no class with public methods"),
])
def test_class_validation_names_function_and_field(src: str, named: str, tmp_path: Path):
    path = tmp_path / "user_tools.py"
    path.write_text(f"from typing import Literal, Optional\n\n{src}")
    with pytest.raises(UserInputError, match=named):
        toolkit_from_module(path)


def test_duplicate_function_names_across_toolkits_are_rejected():
    with pytest.raises(UserInputError, match=r"Bakery2\.\w+: function name already defined by toolkit 'Bakery'"):
        ToolPool([toolkit_from_class(Bakery), toolkit_from_class(Bakery, name="Bakery2")])


def test_module_errors(tmp_path: Path):
    with pytest.raises(UserInputError, match="does not exist"):
        toolkit_from_module(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UserInputError, match="failed to import: RuntimeError: boom"):
        toolkit_from_module(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(UserInputError, match="defines no class"):
        toolkit_from_module(empty)
    with pytest.raises(UserInputError, match="cannot be imported"):
        toolkit_from_module("no_such_package_xyz.tools")


# ----------------------------------------------------------------------------- BFCL


def _bfcl_docs() -> dict[str, list[dict]]:
    root = _package_dir() / "data" / "multi_turn_func_doc"
    return {cls: [json.loads(x) for x in (root / f"{doc}.json").read_text().splitlines() if x.strip()]
            for cls, (_m, doc, _t, _p) in BFCL_CLASSES.items()}


def test_bfcl_eight_classes_load_with_their_documented_functions():
    docs = _bfcl_docs()
    toolkits = bfcl_toolkits()
    assert len(toolkits) == 8
    assert {t.target.__name__ for t in toolkits} == set(BFCL_CLASSES)
    for tk in toolkits:
        names = [d["name"] for d in docs[tk.target.__name__]]
        assert [s.name for s in tk.specs()] == names
        for spec in tk.specs():  # BFCL's dialect is gone; every documented parameter exists on the real method
            assert '"dict"' not in json.dumps(spec.parameters) and '"float"' not in json.dumps(spec.parameters)
            documented = set(spec.parameters.get("properties", {}))
            real = set(inspect.signature(getattr(tk.target, spec.name)).parameters) - {"self"}
            required = {p.name for p in inspect.signature(getattr(tk.target, spec.name)).parameters.values()
                        if p.default is p.empty and p.name != "self"}
            assert required <= documented, spec.name
            # BFCL documents one optional parameter its code lacks; the adapter drops it from the real call.
            assert documented - real in (set(), {"message_id"}), spec.name
    assert len(bfcl_pool()) == sum(len(v) for v in docs.values()) == 129


def test_bfcl_classes_also_load_through_the_plain_python_adapter():
    """BFCL's classes are ordinary typed, docstringed Python: introspection finds what BFCL documents."""
    docs = _bfcl_docs()
    for tk in bfcl_toolkits():
        introspected = toolkit_from_class(tk.target)
        assert sorted(s.name for s in introspected.specs()) == sorted(d["name"] for d in docs[tk.target.__name__])
    ticket = {s.name: s for s in toolkit_from_class(_ticket_api()).specs()}["create_ticket"]
    assert ticket.parameters["required"] == ["title"] and ticket.parameters["properties"]["priority"]["default"] == 1
    # An untyped Dict return gets its fields from the docstring's Returns: section.
    assert ticket.returns["properties"]["id"] == {"type": "integer", "description": "Unique identifier of the ticket."}


def _ticket_api() -> type:
    return next(t.target for t in bfcl_toolkits() if t.target.__name__ == "TicketAPI")


def test_renamed_bfcl_pool_mixes_with_the_builtins():
    pool = ToolPool([*builtin_toolkits().values(), *bfcl_toolkits(rename=True)])
    assert len(pool) == len(ToolPool(builtin_toolkits().values())) + 129
    with pytest.raises(UserInputError, match="function name already defined"):
        ToolPool([*builtin_toolkits().values(), *bfcl_toolkits()])  # BFCL's own names clash (ls, cd, add, ...)


def test_bfcl_real_calls_execute_and_change_state():
    rt = bfcl_pool().instantiate(seed=0)
    before = rt.snapshot()
    assert rt.execute(ToolCall(name="mkdir", arguments={"dir_name": "drafts"})).ok
    assert "drafts" in rt.execute(ToolCall(name="ls", arguments={})).output["current_directory_content"]
    auth = rt.execute(ToolCall(name="authenticate_travel", arguments={
        "client_id": "c", "client_secret": "s", "refresh_token": "r", "grant_type": "read_write",
        "user_first_name": "Ana", "user_last_name": "Diaz"}))
    assert auth.ok
    card = rt.execute(ToolCall(name="register_credit_card", arguments={
        "access_token": auth.output["access_token"], "card_number": "4111111111111111", "expiration_date": "12/2030",
        "cardholder_name": "Ana Diaz", "card_verification_number": 123}))
    assert card.ok, card.error
    after = rt.snapshot()
    assert after["travel_booking"]["credit_card_list"] and not before["travel_booking"]["credit_card_list"]
    assert "drafts" in after["file_system"]["root"]["contents"]
    missing = rt.execute(ToolCall(name="cd", arguments={"folder": "nowhere"}))
    assert not missing.ok and "No such directory" in missing.error
    assert rt.execute(ToolCall(name="add", arguments={"a": 2, "b": "3"})).output == {"result": 5.0}
    # A BFCL scenario is loaded through the class's own _load_scenario.
    scenario = {"market_status": "Closed", "authenticated": True}
    trading = bfcl_pool().instantiate(states={"trading": scenario}, only=["trading"])
    assert trading.snapshot()["trading"]["market_status"] == "Closed" and trading.initial_state["trading"] == scenario
    # A documented parameter the real code does not take is accepted and left out of the call.
    msg = bfcl_pool().instantiate(only=["message"])
    assert msg.execute(ToolCall(name="message_login", arguments={"user_id": "USR001"})).ok
    deleted = msg.execute(ToolCall(name="delete_message", arguments={"receiver_id": "USR002", "message_id": 1}))
    assert deleted.ok and deleted.output["deleted_status"] is True


def test_bfcl_rename_hides_benchmark_names_and_still_runs_the_real_code():
    mapping = rename_map()
    assert len(mapping) == 129 and len(set(mapping.values())) == 129
    pool = bfcl_pool(rename=True)
    names = {s.name for s in pool.specs()}
    assert names == set(mapping.values()) and not names & set(mapping)
    assert all(orig not in new for orig, new in mapping.items())
    identifiers = [n for n in mapping if "_" in n or re.search(r"[a-z][A-Z]", n)]
    for spec in pool.specs():
        assert "This tool belongs to" not in spec.description
        text = spec.description + json.dumps(spec.parameters)
        assert not [n for n in identifiers if re.search(rf"\b{n}\b", text)], spec.name
    rt = pool.instantiate()
    assert rt.execute(ToolCall(name=mapping["mkdir"], arguments={"dir_name": "renamed"})).ok
    assert "renamed" in rt.snapshot()["file_system"]["root"]["contents"]
    assert not rt.execute(ToolCall(name="mkdir", arguments={"dir_name": "x"})).ok  # old names are gone
    inverse = {v: k for k, v in mapping.items()}
    assert inverse[mapping["book_flight"]] == "book_flight"
    rewritten = bfcl_pool(rename=True, rewrite=lambda s: f"Rewritten doc of {s.name}.")
    assert rewritten.spec(mapping["ls"]).description == f"Rewritten doc of {mapping['ls']}."


async def test_teacher_rewrites_descriptions():
    teacher = make_teacher("sim")
    specs = bfcl_pool(rename=True).specs()[:3]
    new = await rewrite_descriptions(teacher, specs)
    assert set(new) == {s.name for s in specs} and all(new.values())
    pool = bfcl_pool(rename=True, rewrite=lambda s: new.get(s.name, s.description))
    assert pool.spec(specs[0].name).description == new[specs[0].name]


# ----------------------------------------------------------------------------- OpenAI JSON specs

TOOLS = [
    {"type": "function", "function": {
        "name": "get_stock_quote", "description": "Latest price of a stock.",
        "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["symbol"]},
        "response": {"type": "object", "properties": {"symbol": {"type": "string"}, "price": {"type": "number"}},
                     "required": ["price"]}}},
    {"name": "ping", "description": "Health check.", "parameters": {"type": "object", "properties": {}}},
]


def test_spec_toolkit_without_teacher_is_deterministic_and_schema_valid(tmp_path: Path):
    path = tmp_path / "stocks.json"
    path.write_text(json.dumps({"tools": TOOLS}))
    cls = spec_toolkit(path)
    assert cls.toolkit_name() == "stocks" and [s.name for s in cls.specs()] == ["get_stock_quote", "ping"]
    a, b = cls(), cls()
    call = ToolCall(name="get_stock_quote", arguments={"symbol": "AAPL", "days": "3"})
    first = a.execute(call)
    assert first.ok and first.output == b.execute(call).output
    assert set(first.output) == {"symbol", "price"} and isinstance(first.output["price"], float)
    assert a.snapshot()["calls"] == [{"name": "get_stock_quote", "arguments": {"symbol": "AAPL", "days": 3}}]
    assert a.execute(ToolCall(name="get_stock_quote", arguments={"symbol": "MSFT"})).output != first.output
    assert not a.execute(ToolCall(name="get_stock_quote", arguments={"days": 1})).ok
    assert a.execute(ToolCall(name="ping")).ok


async def test_spec_toolkit_with_teacher_caches_responses(tmp_path: Path):
    cache = tmp_path / "cache"
    cls = spec_toolkit(TOOLS, teacher=make_teacher("sim"), cache_dir=cache, name="stocks")
    call = ToolCall(name="get_stock_quote", arguments={"symbol": "AAPL"})
    tk = cls()
    assert not tk.execute(call).ok  # sync, uncached: the teacher is async
    answer = await tk.aexecute(call)
    assert answer.ok and isinstance(answer.output["price"], float)
    files = list((cache / "stocks").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["arguments"] == {"symbol": "AAPL"}
    assert tk.execute(call).output == answer.output  # now cached: sync works too
    # A teacher that would answer differently is never asked again for a cached call.
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"match": "Call arguments", "content": "{\"price\": -1}"}]))
    other = spec_toolkit(TOOLS, teacher=make_teacher(f"sim:{script}"), cache_dir=cache, name="stocks")()
    assert (await other.aexecute(call)).output == answer.output
    assert (await other.aexecute(ToolCall(name="get_stock_quote", arguments={"symbol": "IBM"}))).output == {"price": -1}
    # The runtime's aexecute reaches spec toolkits and Python toolkits alike.
    rt = ToolPool([cls, builtin_toolkits()["math"]]).instantiate()
    assert (await rt.aexecute(call)).output == answer.output
    assert (await rt.aexecute(ToolCall(name="add", arguments={"a": 1, "b": 1}))).output == {"result": 2.0}


async def test_simulated_errors_and_bad_answers(tmp_path: Path):
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"match": "\"symbol\": \"BAD\"", "content": "```json\n{\"error\": \"unknown symbol BAD\"}\n```"},
        {"match": "\"symbol\": \"GARBLED\"", "content": "I think the price is high"},
    ]))
    cls = spec_toolkit(TOOLS, teacher=make_teacher(f"sim:{script}"), cache_dir=tmp_path / "c", name="stocks")
    tk = cls()
    err = await tk.aexecute(ToolCall(name="get_stock_quote", arguments={"symbol": "BAD"}))
    assert not err.ok and "unknown symbol BAD" in err.error
    with pytest.raises(BadAnswer):  # a transport-level failure: the engine retries, nothing is cached
        await tk.aexecute(ToolCall(name="get_stock_quote", arguments={"symbol": "GARBLED"}))
    assert len(list((tmp_path / "c" / "stocks").glob("*.json"))) == 1


def _fn(**fields: object) -> dict:
    return {"type": "function", "function": {"name": "f", "description": "d",
                                             "parameters": {"type": "object", "properties": {}}, **fields}}


@pytest.mark.parametrize(("tools", "named"), [
    ([{"type": "function", "function": {"description": "no name"}}], r"tool #0\.name: missing function name"),
    ([_fn(name="bad name!")], r"bad name!\.name: invalid function name"),
    ([_fn(), _fn()], r"f\.name: duplicate function name \(tools #0 and #1\)"),
    ([_fn(parameters={"type": "object", "properties": {"x": {"description": "no type"}}})], r"f\.parameters\.x: missing 'type'"),
    ([_fn(parameters={"type": "object", "properties": {"x": {"type": "float"}}})], r"f\.parameters\.x: invalid type 'float'"),
    ([_fn(parameters={"type": "object", "properties": {}, "required": ["y"]})], r"f\.parameters\.y: listed in 'required'"),
    ([_fn(parameters={"type": "array", "items": {"type": "string"}})], r"f\.parameters\.type: must be \"object\""),
    ([_fn(parameters={"type": "object", "properties": {"x": {"type": "array", "items": {"type": "tuple"}}}})],
     r"f\.parameters\.x\[\]: invalid type"),
    ([_fn(parameters={"type": "object", "properties": {"x": {"type": "string", "enum": []}}})], r"f\.parameters\.x: 'enum'"),
    ([_fn(description=3)], r"f\.description: must be a string"),
    ([_fn(response={"type": "object", "properties": {"p": {"type": "money"}}})], r"f\.response\.p: invalid type"),
    ([3], r"tool #0: must be a JSON object"),
    ([], r"non-empty JSON list"),
])
def test_spec_validation_names_function_and_field(tools: list, named: str):
    with pytest.raises(UserInputError, match=named):
        spec_toolkit(tools)


def test_spec_file_errors(tmp_path: Path):
    with pytest.raises(UserInputError, match="does not exist"):
        spec_toolkit(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        spec_toolkit(bad)
