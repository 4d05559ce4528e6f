"""Argument values a simulated user would state: real ones from the toolkit state shown in the
prompt, else plausible ones for the parameter's kind (a city, a date, an amount, an e-mail).

The simulator writes data that must pass the pipeline's gates: a reference call built from the
query has to execute on the real toolkit. So ids come from the [Environment] snapshot (an
``account_id`` is a key of its ``accounts`` collection), login values from the credentials it
holds, and everything else from the parameter's description (``e.g. "Paris"``, ``1-100``) or
from small pools of well-known values. Choice is by a digest, so it is deterministic; the
``k``-th call of a function in one request gets the ``k``-th candidate, so parallel calls differ.

Multi-turn state adds preconditions a value must meet: the shape the description names
("16-digit", "MM/YY"); a removal takes what the chosen item has (that note's tags); an addition
what it lacks; a debit an account with money; a create a path that does not exist yet; a login
the credentials of its own service. ``Chooser.usable`` applies the same tests to a value an
earlier output shows before the request refers to it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from engine.teachers.sim_prompt import Facts, Function, Param

_CITIES = {"Paris": (48.8566, 2.3522), "London": (51.5074, -0.1278), "Tokyo": (35.6762, 139.6503),
           "New York": (40.7128, -74.006), "San Francisco": (37.7749, -122.4194), "Sydney": (-33.8688, 151.2093),
           "Chicago": (41.8781, -87.6298), "Boston": (42.3601, -71.0589), "Seattle": (47.6062, -122.3321)}
_POOLS: dict[str, list[Any]] = {
    "city": list(_CITIES),
    "airport": ["SFO", "JFK", "LHR", "CDG", "HND", "LAX", "ORD", "SEA", "BOS", "SYD"],
    "timezone": ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin", "America/Chicago"],
    "email": ["sam.lee@example.com", "maria.gomez@example.com", "li.wei@example.org", "jordan.park@example.net"],
    "date": ["2025-03-14", "2025-03-18", "2025-03-21", "2025-04-02", "2025-04-11"],
    "time": ["09:00", "10:30", "13:00", "15:30", "16:45"],
    "earliest": ["08:00", "09:00", "10:00"],
    "latest": ["17:00", "18:00", "19:30"],
    "person": ["Alex Morgan", "Sam Lee", "Maria Gomez", "Priya Shah"],
    "card_number": ["4111111111111111", "5500005555555559", "4012888888881881"],
    "expiry": ["08/28", "11/27", "03/29"],
    "iban": ["DE89370400440532013000", "GB29NWBK60161331926819", "FR1420041010050500013M02606"],
    "zip": ["94107", "10001", "60614", "02139"],
    "street": ["12 Market Street", "48 Oak Avenue", "7 Harbor Road"],
    "message": ["Running ten minutes late", "Can we move lunch to Friday?", "Thanks for the update", "See you at the station"],
    "reason": ["It arrived damaged", "Wrong size", "No longer needed"],
    "content": ["Buy milk and bread", "Call the plumber on Monday", "Ideas for the team offsite"],
    "title": ["Quarterly review", "Dentist appointment", "Coffee with Dana", "Weekly planning"],
    "name": ["Weekend plans", "Recipes", "Work projects", "Reading list"],
    "tag": ["urgent", "ideas", "weekly", "family"],
    "location": ["Office", "Room 4B", "Cafe Central"],
    "color": ["blue", "warm white", "green"],
    "keyword": ["budget", "invoice", "lunch", "meeting"],
    "password": ["hunter2"],
}
_RANGES = {  # name word -> (low, high, integer): sensible magnitudes for common quantities, first match wins
    "budget": (1500, 3000, False), "amount": (20, 150, False), "limit": (3, 10, True), "principal": (1000, 5000, False),
    "rate": (2, 6, False), "percent": (2, 6, False), "years": (2, 10, True), "quantity": (1, 1, True),
    "duration": (30, 90, True), "minutes": (10, 30, True), "lines": (2, 5, True), "days": (2, 5, True),
    "places": (1, 3, True), "brightness": (30, 90, True), "temperature": (18, 24, False), "rating": (3, 5, True),
    "price": (50, 150, False), "distance": (5, 60, False), "exponent": (2, 4, True), "times": (4, 12, True),
}
_FRESH_VERBS = ("create", "add", "register", "open", "save", "write", "make", "store", "start")
# Functions that take something away from an item: the value must be one the item has (its own tag, an invitee).
_REMOVALS = ("remove", "withdraw", "take", "unshare", "uninvite")
_DIGITS = re.compile(r"\b(\d+|two|three|four|five|six)[- ]digits?\b", re.I)
_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_SHAPES = (("MM/YY", r"\d\d/\d\d"), ("YYYY-MM-DD", r"\d{4}-\d\d-\d\d"), ("HH:MM", r"\d\d:\d\d"))
_ID_WORDS = {"id", "ids", "name", "code", "number"}
_ALIASES = {"folder": ["dirs"], "directory": ["dirs"], "dir": ["dirs"], "path": ["dirs", "files"], "file": ["files"],
            "receiver": ["users", "contacts"], "user": ["users", "contacts"], "token": ["tokens", "sessions"],
            "session": ["sessions"], "slot": ["memory"], "source": ["files"], "notebook": ["notebooks"]}
GENERIC = frozenset({"id", "name", "key", "code", "number", "value", "url", "path", "status", "type", "count",
                      "result", "data", "info", "detail", "item", "output", "text", "list", "response", "ref"})
_STOP = frozenset({"the", "a", "an", "of", "to", "in", "from", "for", "and", "or", "id", "is", "on", "by", "with", "e", "g"})


def digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP]


class Chooser(msgspec.Struct, kw_only=True):
    """Picks values for one request; ``taken`` keeps the values of one call apart
    (a transfer's two accounts, an exchange rate's two currencies)."""

    env: Facts
    earlier: dict[str, list[Any]] = {}  # param name -> values given in earlier calls of the conversation
    avoid: frozenset[str] = frozenset()  # function names a string value must not contain as a word
    salt: int = 0
    taken: list[Any] = []
    held: list[Any] = []  # what the item chosen for this call already has: an addition must differ

    def value(self, param: Param, fn: Function, k: int) -> Any:
        """A value for ``param`` of the ``k``-th call of ``fn`` in this request, never None."""
        got = self.grounded(param, fn, k)
        if got is None:
            got = f"{words(param.name)[-1] if words(param.name) else 'item'}-{k + 1}"
            self.taken.append(got)
        return got

    def grounded(self, param: Param, fn: Function, k: int) -> Any | None:
        """A value the state, the description or a pool of real values backs; None when only a
        made-up placeholder ("order-1") would do."""
        self.held = [] if _removal(fn) else self._item_lists(param, fn)
        for option in (self._own, self._enum, self._from_env, self._pooled, self._numeric):
            got = option(param, fn, k)
            if got is not None:
                self.taken.append(got)
                return got
        return None

    def pick(self, options: list[Any], param: Param, k: int) -> Any | None:
        usable = [o for o in dict.fromkeys(options)
                  if o is not None and self._clean(o) and shaped(o, param) and o not in self.held]
        if not usable:
            return None
        fresh = [o for o in usable if o not in self.taken] or usable
        return fresh[(digest(param.name, self.salt) + k) % len(fresh)]

    def _clean(self, value: Any) -> bool:
        if not isinstance(value, str):
            return not isinstance(value, (dict, list))
        if '"' in value or "\n" in value or len(value) > 80:
            return False
        return not any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", value) for n in self.avoid)

    def usable(self, value: Any, param: Param, fn: Function) -> bool:
        """Whether a value an earlier output shows can serve ``param``: the right shape, a positive
        quantity, and for an id whose collection the environment shows in full, one that is there
        and fits (a deleted note, a thermostat for a lock's id are not)."""
        if not shaped(value, param) or (_quantity(param.name) and isinstance(value, (int, float)) and value <= 0):
            return False
        if not isinstance(value, str):
            return True
        if _removal(fn) and (own := self._item_lists(param, fn)):
            return value in own
        if param.name.endswith("_id") and (tied := self._tied(param, fn)):
            return value in tied
        fresh = fn.description.lower().startswith(_FRESH_VERBS) and coll_is_path(param)
        for coll in self._collections(param, fn):
            if coll in self.env.closed:
                ids = self._ids(coll)
                return value not in ids if fresh else value in self._fitting(coll, ids, param, fn)
        return True

    # -- sources, in order of preference ---------------------------------------------------

    def _own(self, param: Param, fn: Function, k: int) -> Any | None:
        """A removal takes what the chosen item has: that note's tags, that event's invitees."""
        if not _removal(fn):
            return None
        own = self._item_lists(param, fn)
        return self.pick(own, param, k) if own else None

    def _item_lists(self, param: Param, fn: Function) -> list[Any]:
        """The values listed under ``param`` in the entry of an item already chosen for this call
        (``tag`` -> the note's ``tags``, ``email`` of ``remove_attendee`` -> the event's ``attendees``)."""
        keys = _list_keys(param, fn)
        out: list[Any] = []
        for entries in self.env.entries.values():
            for member in self.taken:
                entry = entries.get(member) if isinstance(member, str) else None
                if isinstance(entry, dict):
                    out += [v for key in keys if isinstance(entry.get(key), list) for v in entry[key]]
        return out

    def _ids(self, coll: str) -> list[Any]:
        return self.env.members.get(coll) or [v for v in self.env.items.get(coll, []) if isinstance(v, str)]

    def _enum(self, param: Param, fn: Function, k: int) -> Any | None:
        return self.pick(param.enum, param, k) if param.enum else None

    def _from_env(self, param: Param, fn: Function, k: int) -> Any | None:
        if param.type in ("number", "integer", "boolean"):
            same = [v for v in self.env.field(param.name) if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and (param.type == "number" or float(v).is_integer()) and not (_quantity(param.name) and v <= 0)]
            # A parallel call past the state's own values gets a fresh one: repeated calls must differ.
            usable = same and k < len(set(same)) and param.name not in GENERIC and param.type != "boolean"
            return self.pick(same, param, k) if usable else None
        if param.name in ("username", "user_name", "login"):
            return self._credential(param, fn, k, key=True)
        if param.name in ("password", "passcode"):
            return self._credential(param, fn, k, key=False)
        if param.name.endswith("_id") and (tied := self._tied(param, fn)):
            return self.pick(tied, param, k)
        fresh = fn.description.lower().startswith(_FRESH_VERBS)
        for coll in self._collections(param, fn):
            if self._keyed_by_others(coll):
                # A lookup keyed by other ids (``pins``: device -> PIN): the value of the item chosen.
                mine = [v for m, v in self.env.entries.get(coll, {}).items() if m in self.taken and not isinstance(v, (dict, list))]
                if mine:
                    return mine[0]
                continue
            ids = self._fitting(coll, self._ids(coll), param, fn)
            # A user keeps talking about the same account: an id given earlier comes first.
            again = [v for v in self.earlier.get(param.name, [])[::-1] if v in ids]
            if again and not k and not fresh:
                return self.pick(again[:1], param, k)
            if param.type == "array" and ids:
                return [self.pick(ids, param, k + i) for i in range(min(2, len(ids)))]
            if ids and fresh and coll in ("files", "dirs"):
                return self._fresh_path(self.pick(ids, param, k), coll, k)
            if ids and coll in ("files", "dirs") and _new_name(param) and (source := self._taken_path()):
                return self._fresh_path(source, "files", k)
            if ids:
                return self.pick(ids, param, k)
        if param.name not in GENERIC and (same := [v for v in self.env.field(param.name) if isinstance(v, str)]):
            return self.pick(same, param, k)
        if "keyword" in param.name or "query" in param.name or "pattern" in param.name:
            return self.pick(self._env_words(), param, k)
        return None

    def _tied(self, param: Param, fn: Function) -> list[Any]:
        """Ids the function's description ties to another collection's lists: "Review a product
        you ordered" -> the ``product_ids`` of the orders."""
        said = words(fn.description)
        out: list[Any] = []
        for coll, entries in self.env.entries.items():
            stem = coll.removesuffix("s")
            if coll in self.env.members and any(w.startswith(stem) for w in said):
                out += [v for e in entries.values() if isinstance(e, dict) and isinstance(e.get(f"{param.name}s"), list)
                        for v in e[f"{param.name}s"]]
        return out

    def _collections(self, param: Param, fn: Function) -> list[str]:
        """Container names that may hold this parameter's values: ``account_id`` -> ``accounts``;
        a removal's own container first (``remove_from_cart`` -> ``cart``). Free text is no id."""
        name = param.name.lower().rstrip("0123456789")
        if not name.endswith(("_id", "_ids")) and _kind(name, "") in _TEXT_KINDS:
            return []
        stems = [w for w in name.split("_") if w not in _ID_WORDS] or [name]
        base = [stems[-1], "_".join(stems)] + (words(param.description)[:3] if name.endswith(("_id", "_ids")) else [])
        out = []
        for stem in base:
            out += [f"{stem}s", f"{stem}es", f"{stem[:-1]}ies", stem] + _ALIASES.get(stem, [])
        for word in words(param.description):  # "Folder to enter", "Slot name": what the value names
            out += _ALIASES.get(word, [])
        if _removal(fn) and name.endswith("_id"):
            out = [w for w in fn.name.split("_") if w in self.env.members] + out
        known = set(self.env.members) | set(self.env.items)
        return [c for c in dict.fromkeys(out) if c in known]

    def _fitting(self, coll: str, ids: list[Any], param: Param, fn: Function) -> list[Any]:
        """Members whose fields mention the parameter's description (``Id of the lock.`` -> a lock);
        of those, the ones of the user logged in (their messages); for a removal, the ones that
        have something to remove (an event with invitees)."""
        entries = self.env.entries.get(coll, {})
        wanted = set(words(param.description)) - {"id", "device", "user", "account"}
        good = [i for i in ids if isinstance(entries.get(i), dict)
                and wanted & {w for v in entries[i].values() if isinstance(v, str) for w in words(v)}] or ids
        if "debit" in param.description.lower():  # an empty account cannot pay anything
            good = [i for i in good if not (isinstance(entries.get(i), dict) and entries[i].get("balance") == 0)] or good
        me = set(self._owners())
        good = [i for i in good if isinstance(entries.get(i), dict) and any(v in me for v in entries[i].values() if isinstance(v, str))] or good
        if _removal(fn):
            keys = [key for p in fn.params if p.name != param.name for key in _list_keys(p, fn)]
            good = [i for i in good if isinstance(entries.get(i), dict) and any(entries[i].get(key) for key in keys)] or good
        return good

    def _keyed_by_others(self, coll: str) -> bool:
        """Whether a collection's keys are the ids of another one (``pins`` keyed by device ids)."""
        keys = set(self.env.members.get(coll) or [])
        return bool(keys) and any(keys <= set(ids) for other, ids in self.env.members.items() if other != coll)

    def _owners(self) -> list[Any]:
        """Who the user is: the accounts of open sessions, else the state's ``me``."""
        sessions = [v for v in self.env.entries.get("sessions", {}).values() if isinstance(v, str)]
        return sessions or [v for v in self.env.field("me") if isinstance(v, str)]

    def _taken_path(self) -> str | None:
        files = self.env.members.get("files") or []
        return next((v for v in self.taken if v in files), None)

    def _fresh_path(self, existing: str, coll: str, k: int) -> str:
        """A path that does not exist yet next to an existing one: what a create, a copy or a move needs."""
        known = set(self._ids("files")) | set(self._ids("dirs")) | {v for v in self.taken if isinstance(v, str)}
        start = digest(self.salt) + k
        options = [_fresh_path(existing, coll, start + i) for i in range(5)]
        return next((o for o in options if o not in known), options[0])

    def _credential(self, param: Param, fn: Function, k: int, key: bool) -> Any | None:
        """A user name and its password from the logins of the function's own service (the one its
        name or description names), the account owner's first; a password matches the name given."""
        colls = [c for c in ("credentials", "passwords", "logins", "accounts") if c in self.env.entries]
        said = f"{fn.name} {fn.description}".lower()
        colls.sort(key=lambda c: self.env.toolkit.get(c, "")[:4] not in said)
        for coll in colls:
            pairs = {u: p for u, p in self.env.entries.get(coll, {}).items() if isinstance(p, str)}
            if not pairs:
                continue
            if not key and (named := next((t for t in self.taken if t in pairs), None)) is not None:
                return pairs[named]
            names = {v for e in self.env.entries.values() for i, v in e.items() if i in self._owners()}
            users = sorted(pairs, key=lambda u: (u not in names, u))
            user = users[0] if k == 0 and users[0] in names else users[(digest(coll, self.salt) + k) % len(users)]
            return user if key else pairs[user]
        return None

    def _env_words(self) -> list[str]:
        text = " ".join(str(v) for vs in self.env.fields.values() for v in vs if isinstance(v, str))
        return sorted({w for w in re.findall(r"[a-z]{4,}", text.lower()) if w not in _STOP})[:40]

    def _pooled(self, param: Param, fn: Function, k: int) -> Any | None:
        if param.type not in ("string", "any") or param.name.endswith("_id"):
            return None  # an id nobody has shown cannot be made plausible
        name, desc = param.name.lower(), param.description.lower()
        example = re.search(r"(?:e\.g\.|such as)\s*\"?([^\",)]+?)\"?(?:[.,)]|$)", param.description)
        kind = _kind(name, desc)
        if kind == "city" and (found := self.env.field("city")):
            return self.pick(found + _POOLS["city"], param, k)
        pool = list(_POOLS.get(kind, []))
        if example and not kind.startswith(("date", "time")):
            pool.insert(0, example.group(1).strip())
        return self.pick(pool, param, k) if pool else None

    def _numeric(self, param: Param, fn: Function, k: int) -> Any | None:
        if param.type == "boolean":
            return bool((digest(param.name, self.salt) + k) & 1)
        if param.type == "array":
            nums = [[3, 8, 15], [2, 4, 9, 11], [10, 20, 35], [1.5, 2.5, 4]]
            return nums[(digest(param.name, self.salt) + k) % len(nums)]
        if param.type not in ("number", "integer"):
            return None
        integer = param.type == "integer"
        name = param.name.lower()
        if name in ("latitude", "longitude", "lat", "lon", "lng"):
            city = list(_CITIES.values())[(digest("city", self.salt) + k) % len(_CITIES)]
            return city[0] if name.startswith("lat") else city[1]
        low, high = _bounds(param, name)
        step = 1 if integer or high - low <= 10 else 5
        n = (high - low) // step + 1
        value = low + ((digest(name, self.salt) + k * 7) % int(n)) * step
        return int(value) if integer else float(value)


_TEXT_KINDS = ("message", "reason", "content")


def shaped(value: Any, param: Param) -> bool:
    """Whether a string has the shape the description asks for ("16-digit", "MM/YY", "HH:MM")."""
    if not isinstance(value, str) or param.type not in ("string", "any"):
        return True
    if (m := _DIGITS.search(param.description)) is not None:
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBER_WORDS[m.group(1).lower()]
        return value.isdigit() and len(value) == n
    return all(re.fullmatch(shape, value) for key, shape in _SHAPES if key in param.description)


def has_shape(param: Param) -> bool:
    """Whether the description fixes the value's format: a value the user states, not looks up."""
    return _DIGITS.search(param.description) is not None or any(key in param.description for key, _ in _SHAPES)


def coll_is_path(param: Param) -> bool:
    """Whether the parameter names a file or folder (a create's path must be new)."""
    return bool({"file", "folder", "dir", "path"} & set(words(param.name.replace("_", " "))))


def _quantity(name: str) -> bool:
    """Whether the parameter is an amount of something, which no toolkit takes as zero or negative."""
    return any(word in name.lower() for word in _RANGES)


def _removal(fn: Function) -> bool:
    return fn.name.split("_")[0] in _REMOVALS or fn.description.lower().startswith(_REMOVALS)


def _list_keys(param: Param, fn: Function) -> list[str]:
    """Names an item's list of this parameter's values may have: ``tag`` -> ``tags``; the
    function's own nouns (``remove_attendee`` -> ``attendees``)."""
    return [f"{param.name}s", f"{param.name}es"] + [f"{w}s" for w in fn.name.split("_")[1:]]


def _new_name(param: Param) -> bool:
    """A path parameter that names something to be made ("New name", "Name of the copy")."""
    return bool({"new", "copy"} & set(words(param.description)))


def _kind(name: str, desc: str) -> str:
    """Which pool a string parameter draws from, by its name first and its description second."""
    for kind, keys in (("email", ("email",)), ("timezone", ("timezone",)), ("airport", ("airport",)),
                       ("card_number", ("card_number",)), ("expiry", ("expiry",)), ("iban", ("iban",)),
                       ("zip", ("zip",)), ("street", ("street",)), ("date", ("date",)), ("city", ("city", "destination")),
                       ("person", ("passenger", "cardholder", "person", "full_name")), ("earliest", ("earliest",)),
                       ("latest", ("latest",)), ("time", ("time",)),
                       ("message", ("message",)), ("reason", ("reason",)), ("content", ("content", "body", "text")),
                       ("title", ("title", "subject")), ("tag", ("tag",)), ("location", ("location", "address")),
                       ("color", ("color", "colour")), ("keyword", ("keyword", "query", "pattern")),
                       ("password", ("password",)), ("name", ("name",))):
        if any(key in name for key in keys):
            return kind
    if "hh:mm" in desc:
        return "time"
    if "yyyy-mm-dd" in desc:
        return "date"
    return ""


def _bounds(param: Param, name: str) -> tuple[float, float]:
    schema = param.schema
    low, high = schema.get("minimum"), schema.get("maximum")
    if (m := re.search(r"(-?\d+(?:\.\d+)?)\s*(?:-|to)\s*(-?\d+(?:\.\d+)?)", param.description)) is not None:
        low = float(m.group(1)) if low is None else low
        high = float(m.group(2)) if high is None else high
    if low is None or high is None:
        for word, (lo, hi, _integer) in _RANGES.items():
            if word in name:
                low, high = (lo if low is None else low), (hi if high is None else high)
                break
    low = 2 if low is None else low
    high = max(low, low + 48 if high is None else high)
    return low, high


def _fresh_path(existing: str, coll: str, k: int) -> str:
    """A name that does not exist yet, next to an existing one: what a create call needs."""
    folder, _, base = existing.rpartition("/")
    if coll == "dirs":
        return f"{existing.rstrip('/')}/{['archive', 'drafts', 'backup', 'shared', 'old'][k % 5]}"
    stem, dot, ext = base.partition(".")
    return f"{folder}/{stem}_{['copy', 'new', 'v2', 'final', 'backup'][k % 5]}{dot}{ext}"
