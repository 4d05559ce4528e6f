"""The simulator's answers to the translation prompts: it plays the user (back translation,
leaving a value out, following up) and reads its own requests back into calls (forth).

A request is one sentence per call, each built around a phrase taken from the function's
description (``deposit money into an account``) followed by the values it needs, each after a
plain-words label (``with account "ACC-042450" and amount 250``). Strings are quoted, numbers
bare, lists as JSON; a value an earlier output provides is only referred to (``the account you
just found``; ``the token you got earlier`` for one a call of an earlier round made, which the
translator binds from the outputs). The forth step finds each call's phrase in order and reads the labelled values
between it and the next phrase; values the request leaves to earlier outputs come from the
[Reference Output] by field name (the k-th such value for the k-th call of one function).
Functions and parameter names are never written as such: the translator rejects a request
that names a function, so labels and phrases swap such words for plain synonyms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from engine.records import Message
from engine.teachers.sim_prompt import Facts, Function, Param, parse_functions, scan, sections, with_schema
from engine.teachers.sim_values import GENERIC, Chooser, digest, has_shape, words

TASKS = ("back_translation", "forth_translation", "miss_param_query", "follow_up")
_SYNONYMS = {"add": "sum", "deposit": "put", "withdraw": "take out", "transfer": "move", "divide": "split",
             "multiply": "scale", "subtract": "take away", "mean": "average", "power": "exponent", "cat": "read",
             "find": "look for", "grep": "search", "tail": "end", "touch": "create", "checkout": "check out",
             "name": "title", "sort": "order", "cd": "go to", "ls": "list", "rm": "delete", "mv": "move",
             "cp": "copy", "diff": "compare", "wc": "count", "mkdir": "create", "pwd": "show"}
_VERBS = frozenset("""get list find search add create delete remove set send book cancel check show read write move copy
compare measure change count return start stop log deposit withdraw pay register store save open apply put take mark
pin tag share replace switch lock unlock invite answer convert divide multiply subtract raise round look buy leave
purchase block end star view find contact retrieve track activate schedule sum go scale split order average""".split())
_OPENERS = ("", "Hi! ", "Hello! ", "Hey there! ")
_JOINERS = ("Then", "After that,", "Next,")
_CREATES = ("create", "add", "open", "register", "save", "make", "start", "book", "set up")
_LOOKUPS = ("get_", "find_", "search_", "lookup_", "look_up_")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?![\w-])")


def task_of(messages: list[Message], response_format: dict[str, Any] | None) -> tuple[str, str] | None:
    """(task, prompt) when the conversation is one of the translation prompts, else None.
    The prompt is the first user message: a retry appends the rejected answer and the problem."""
    prompt = next((m.content or "" for m in messages if m.role == "user"), "")
    named = ((response_format or {}).get("json_schema") or {}).get("name")
    if named in TASKS:
        return named, prompt
    heads = set(sections(prompt))
    for task, needs in (("back_translation", {"Candidate Functions", "Environment"}),
                        ("forth_translation", {"Functions", "User Query"}),
                        ("miss_param_query", {"Original Message"}), ("follow_up", {"Your Last Message"})):
        if needs <= heads:
            return task, prompt
    return None


def answer(task: str, prompt: str, response_format: dict[str, Any] | None, salt: int) -> dict[str, Any]:
    if task == "back_translation":
        return {"query": back_translation(prompt, salt)}
    if task == "forth_translation":
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        return forth_translation(prompt, schema)
    if task == "miss_param_query":
        return {"query": without_value(prompt)}
    return {"query": follow_up(prompt, salt)}


# -- words shared by the writer and the reader --------------------------------------------------


def label(param: str, avoid: frozenset[str]) -> str:
    """``from_account_id`` -> ``from account``; a word that is a function's name gets a synonym."""
    parts = re.sub(r"(\d+)$", r" \1", param).replace("_", " ").split()
    if len(parts) > 1 and parts[-1] in ("id", "ids"):
        parts = parts[:-1] if parts[-1] == "id" else [*parts[:-1][:-1], parts[-2] + "s"]
    return " ".join(_SYNONYMS.get(p, "value") if p in avoid else p for p in parts)


def phrase(fn: Function, avoid: frozenset[str]) -> str:
    """What the user asks for, from the description's first sentence, as an imperative."""
    text = re.split(r"(?<=[a-z])\. ", fn.description.strip())[0].rstrip(".").replace('"', "'") or fn.name.replace("_", " ")
    text = re.sub(r"\b\w+\b", lambda m: _SYNONYMS.get(m.group(0).lower(), "that") if m.group(0).lower() in avoid else m.group(0), text)
    first = text.split()[0].lower() if text.split() else ""
    text = text[:1].lower() + text[1:]
    if first not in _VERBS:
        text = ("work out " if first in ("what", "how", "which", "whether") else "work out the ") + text
    return text


def render(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def _ordinal(k: int) -> str:
    return ("first", "second", "third", "fourth")[k] if k < 4 else f"number {k + 1}"


# -- back translation -----------------------------------------------------------------------------


def back_translation(prompt: str, salt: int) -> str:
    sec = sections(prompt)
    fns = parse_functions(sec.get("Candidate Functions", ""))
    avoid = frozenset(f.name for f in fns)
    env = scan(_json_part(sec.get("Environment", "")))
    last = scan(sec.get("Last Round", "").partition("Outputs:")[2])
    history = sec.get("Conversation So Far", "")
    chooser = Chooser(env=env, earlier=_earlier_args(history), avoid=avoid, salt=digest(prompt, salt))
    made = set(re.findall(r"(\w+)\(", "\n".join(line for line in history.splitlines() if line.startswith("Calls:"))))
    h = digest(prompt, salt, "words")
    seen: dict[str, int] = {}
    sentences = []
    for i, fn in enumerate(fns):
        k = seen[fn.name] = seen.get(fn.name, -1) + 1
        chooser.taken = []
        segments = []
        for p in _stated(fn, h):
            name = label(p.name, avoid)
            if (found := _from_last_round(p, fn, last, k, chooser)) is not None:
                chooser.taken.append(found)
                segments.append(f"the {name} you just found" if k == 0 else f"the {_ordinal(k)} {name} you found")
            elif any(_made_by(p, earlier, env) for earlier in fns[:i] if earlier.name != fn.name):
                segments.append(f"the resulting {name}")
            elif _named_producer(p, made) and (p.name.endswith("_token") or chooser.grounded(p, fn, k) is None):
                # Made by a call of an earlier round whose output is no longer shown: a token,
                # the flight a search found. Referred to, never invented; the reader binds it.
                segments.append(f"the {name} you got earlier")
            else:
                segments.append(f"{name} {render(chooser.value(p, fn, k))}")
        what = phrase(fn, avoid)
        args = f"{_intro(what)}{_join(segments)}" if segments else ""
        if i == 0:
            start = ("Could you ", "Please ", "I'd like you to ")[h % 3]
            sentences.append(f"{_OPENERS[h % len(_OPENERS)]}{start}{what}{args}" + ("?" if start == "Could you " else "."))
        else:
            joiner = "Also" if k else ("Finally," if i == len(fns) - 1 and i > 1 else _JOINERS[(h + i) % len(_JOINERS)])
            sentences.append(f"{joiner} {what}{args}.")
    return " ".join(sentences) or "Can you help me with something?"


def _stated(fn: Function, h: int) -> list[Param]:
    """Required params plus at most one optional one: always one when nothing but ids is required
    (an update with no change reads as a vague request), else now and then. One, because
    optional filters combined at random tend to match nothing."""
    optional = [p for p in fn.params if not p.required]
    chosen = set()
    if optional and (digest(fn.name, h) % 3 == 0 or all(p.name.endswith(("_id", "_token")) for p in fn.params if p.required)):
        chosen.add(optional[digest(fn.name, h, "which") % len(optional)].name)
    return [p for p in fn.params if p.required or p.name in chosen]


def _intro(what: str) -> str:
    """What leads into the values: " with ", or ", using " when the phrase has its own "with"."""
    return ", using " if " with " in what else " with "


def _from_last_round(param: Param, fn: Function, last: Facts, k: int, chooser: Chooser) -> Any | None:
    """The value the k-th call takes from the last round's outputs (one value each), the one the
    reader will pick; None when there is none, or it cannot serve (a note just deleted, a
    withdrawal's negative amount, a thermostat where a lock is wanted)."""
    if param.name in GENERIC:
        return None
    shown = [v for v in last.field(param.name) if _fits(v, param)]
    return shown[k] if len(shown) > k and chooser.usable(shown[k], param, fn) else None


def _made_by(param: Param, earlier: Function, env: Facts) -> bool:
    """Whether an earlier call of this round produces the value: the parameter's description
    names that function ("Token from bank_login."); an id the earlier call creates ("Open a new
    account" -> account_id); a value a lookup is described as getting ("Get the latitude ..."),
    unless the state holds it under that very name (the bank's ``pin`` is no smart lock's PIN)."""
    if re.search(rf"(?<!\w){re.escape(earlier.name)}(?!\w)", param.description):
        return True
    if param.name in GENERIC or env.field(param.name) or has_shape(param):
        return False
    name_words = set(words(param.name.removesuffix("_id").replace("_", " ")))
    said = set(words(earlier.description))
    if param.name.endswith("_id"):
        return bool(name_words) and name_words <= said and earlier.description.lower().startswith(_CREATES)
    return bool(name_words) and name_words <= said and earlier.name.startswith(_LOOKUPS)


def _named_producer(param: Param, made: set[str]) -> bool:
    """Whether the parameter's description names a function called in an earlier round
    ("Token from bank_login.", "Flight id from search_flights.")."""
    return any(re.search(rf"(?<!\w){re.escape(name)}(?!\w)", param.description) for name in made)


def _fits(value: Any, param: Param) -> bool:
    if param.enum:
        return value in param.enum
    if param.type == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if param.type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if param.type == "string":
        return isinstance(value, str)
    return True


def _join(segments: list[str]) -> str:
    return segments[0] if len(segments) == 1 else ", ".join(segments[:-1]) + " and " + segments[-1]


def _json_part(text: str) -> str:
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    return text[min(starts):] if starts else ""


def _earlier_args(history: str) -> dict[str, list[Any]]:
    """Argument values of the calls made so far (``Calls: [f(a="x")]`` lines), by name."""
    found: dict[str, list[Any]] = {}
    for m in re.finditer(r"(\w+)=(\"(?:[^\"\\]|\\.)*\"|-?\d+(?:\.\d+)?)", history):
        raw = m.group(2)
        value = json.loads(raw) if raw.startswith('"') else (float(raw) if "." in raw else int(raw))
        found.setdefault(m.group(1), []).append(value)
    return found


# -- forth translation ----------------------------------------------------------------------------


def forth_translation(prompt: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    sec = sections(prompt)
    fns = {f.name: f for f in parse_functions(sec.get("Functions", ""))}
    query = sec.get("User Query", "")
    outputs = scan(_json_part(sec.get("Reference Output", "")))
    slots = _slots(sec.get("Rules", ""), fns, schema)
    avoid = frozenset(fns)
    fallback = Chooser(env=Facts(fields={}, members={}, items={}, entries={}), avoid=avoid, salt=digest(query))
    cursor, spans = 0, []
    for fn in slots:
        at = query.find(phrase(fn, avoid), cursor)
        spans.append(at)
        cursor = at + len(phrase(fn, avoid)) if at >= 0 else cursor
    answer: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for i, fn in enumerate(slots):
        k = seen[fn.name] = seen.get(fn.name, -1) + 1
        start = spans[i] + len(phrase(fn, avoid)) if spans[i] >= 0 else 0
        end = next((s for s in spans[i + 1:] if s >= 0), len(query)) if spans[i] >= 0 else len(query)
        stated = read_values(query[start:end], fn, avoid)
        args: dict[str, Any] = {}
        fallback.taken = []
        for p in fn.params:
            if p.name in stated:
                args[p.name] = stated[p.name]
            elif (given := [v for v in outputs.field(p.name) if _fits(v, p)]) and (p.required or _referred(query[start:end], p, avoid)):
                args[p.name] = given[k % len(given)]
            elif p.required:  # a value an earlier call of this round returns: the translator binds it
                args[p.name] = fallback.value(p, fn, k)
        answer[f"call_{i + 1}"] = {"name": fn.name, "arguments": args}
    return answer


def _referred(clause: str, param: Param, avoid: frozenset[str]) -> bool:
    """Whether the clause points at an earlier output for this param ("the account you just found")."""
    return re.search(rf"\bthe (?:resulting |\w+ )?{re.escape(label(param.name, avoid))}\b(?! [\"\[{{\d-])", clause) is not None


def _slots(rules: str, fns: dict[str, Function], schema: dict[str, Any] | None) -> list[Function]:
    """The calls to fill, in order: the schema's call_N slots, else the rules' list of names."""
    if schema and isinstance(schema.get("properties"), dict):
        out = []
        for key in sorted(schema["properties"], key=lambda s: int(s[5:]) if s[5:].isdigit() else 0):
            slot = schema["properties"][key]
            names = ((slot.get("properties") or {}).get("name") or {}).get("enum") or []
            if not names:
                continue
            base = fns.get(names[0], Function(name=names[0]))
            out.append(with_schema(base, (slot.get("properties") or {}).get("arguments") or {}))
        return out
    m = re.search(r"in this order: ([^\n]*?)\.?\n", rules + "\n")
    names = [n.strip() for n in m.group(1).split(",")] if m else list(fns)
    return [fns.get(n, Function(name=n)) for n in names if n]


def read_values(clause: str, fn: Function, avoid: frozenset[str]) -> dict[str, Any]:
    """``label value`` pairs of ``fn``'s params in a clause; longest labels first so that
    ``from account`` is not read as ``account``."""
    found: dict[str, Any] = {}
    text = clause
    for p in sorted(fn.params, key=lambda p: -len(label(p.name, avoid))):
        m = re.search(rf"(?<![\w-]){re.escape(label(p.name, avoid))} (?=[\"\[{{\d-]|yes\b|no\b)", text)
        if m is None:
            continue
        got = _value_at(text, m.end())
        if got is None:
            continue
        value, end = got
        found[p.name] = _typed(value, p)
        text = text[: m.start()] + " " * (end - m.start()) + text[end:]
    return found


def _value_at(text: str, i: int) -> tuple[Any, int] | None:
    if text.startswith('"', i):
        close = text.find('"', i + 1)
        return (text[i + 1: close], close + 1) if close > i else None
    if text.startswith(("[", "{"), i):
        try:
            return json.JSONDecoder().raw_decode(text, i)
        except ValueError:
            return None
    if (m := _NUMBER.match(text, i)) is not None:
        raw = m.group(0)
        return (float(raw) if "." in raw else int(raw)), m.end()
    for word, value in (("yes", True), ("no", False)):
        if text.startswith(word, i):
            return value, i + len(word)
    return None


def _typed(value: Any, param: Param) -> Any:
    if param.type == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if param.type == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


# -- leaving a value out, following up ----------------------------------------------------------


def without_value(prompt: str) -> str:
    """The original request minus every labelled value that shows the left-out value."""
    sec = sections(prompt)
    query = sec.get("Original Message", "")
    m = re.search(r"the value \((.*)\)\. Do not name", prompt, re.S)
    value = m.group(1) if m else ""
    if not value:
        return query
    out = []
    for sentence in _sentences(query):
        cut, intro = _last_intro(sentence)
        if value.lower() not in sentence.lower() or cut < 0:
            out.append(sentence)
            continue
        head, rest = sentence[:cut], sentence[cut + len(intro):]
        end = rest[-1] if rest[-1:] in ".?!" else ""
        kept = [s for s in _split_args(rest[: len(rest) - len(end)]) if value.lower() not in s.lower()]
        out.append(f"{head}{intro}{_join(kept)}{end}" if kept else head + end)
    text = " ".join(out)
    return text if value.lower() not in text.lower() else re.sub(re.escape(value), "it", text, flags=re.I)


def _last_intro(sentence: str) -> tuple[int, str]:
    """Where the values start: the last `` with `` or ``, using `` outside quotes (the phrase
    before it may contain a "with" of its own)."""
    found, quoted = (-1, ""), False
    for i, ch in enumerate(sentence):
        if ch == '"':
            quoted = not quoted
        elif not quoted and (intro := next((s for s in (" with ", ", using ") if sentence.startswith(s, i)), None)):
            found = (i, intro)
    return found


def _sentences(text: str) -> list[str]:
    """Split after ``.``/``?``/``!`` + space outside quotes and brackets."""
    return _split_outside(text, lambda i: (i + 1, i + 2) if text[i] in ".?!" and text[i + 1: i + 2] == " " else None)


def _split_args(text: str) -> list[str]:
    """``a "x", b 2 and c "y, z"`` -> its segments (separators inside quotes or brackets kept)."""
    def separator(i: int) -> tuple[int, int] | None:
        sep = next((s for s in (", ", " and ") if text.startswith(s, i)), None)
        return (i, i + len(sep)) if sep else None

    return _split_outside(text, separator)


def _split_outside(text: str, separator: Callable[[int], tuple[int, int] | None]) -> list[str]:
    """The non-blank segments of ``text`` between separators outside quotes and brackets. ``separator(i)``
    says whether one is at ``i``: (where the segment before it ends, where the next starts), or None."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "[{":
            depth += 1
        elif not quoted and ch in "]}":
            depth -= 1
        elif not quoted and depth == 0 and (cut := separator(i)):
            parts.append(text[start:cut[0]])
            i = start = cut[1]
            continue
        i += 1
    return [p for p in (*parts, text[start:]) if p.strip()]


def follow_up(prompt: str, salt: int) -> str:
    sec = sections(prompt)
    last = sec.get("Your Last Message", "")
    h = digest(last, salt)
    if (m := re.search(r"gives it: (.*?)\.\n\s*\[Your Last Message\]", prompt, re.S)) is not None:
        value = m.group(1)
        who = re.search(r"you left out the (\w+)", prompt)
        name = label(who.group(1), frozenset()) if who else "value"
        shown = value if re.fullmatch(r"-?\d+(?:\.\d+)?|\[.*\]|\{.*\}", value, re.S) else f'"{value}"'
        return ("Sorry, I forgot: the {} is {}.", "Oops, it's {1} for the {0}.", "Right, the {} should be {}.")[h % 3].format(name, shown)
    if "try again" in prompt:
        return ("It should be available now, please try again.", "That option works now. Could you try once more?",
                "Please give it another go, it's available now.")[h % 3]
    return "Sure, go ahead."
