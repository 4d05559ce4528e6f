"""Argument values a simulated user would state: real ones from the toolkit state shown in the
prompt, else plausible ones for the parameter's kind (a city, a date, an amount, an e-mail).

The simulator writes data that must pass the pipeline's gates: a reference call built from the
query has to execute on the real toolkit. So ids come from the [Environment] snapshot (an
``account_id`` is a key of its ``accounts`` collection), login values from the credentials it
holds, and everything else from the parameter's description (``e.g. "Paris"``, ``1-100``) or
from small pools of well-known values. Choice is by a digest, so it is deterministic; the
``k``-th call of a function in one request gets the ``k``-th candidate, so parallel calls differ.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from engine.teachers.sim_prompt import Facts, Function, Param

_CITIES = {"Paris": (48.8566, 2.3522), "London": (51.5074, -0.1278), "Tokyo": (35.6762, 139.6503),
           "New York": (40.7128, -74.006), "Berlin": (52.52, 13.405), "Sydney": (-33.8688, 151.2093),
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

    def value(self, param: Param, fn: Function, k: int) -> Any:
        """A value for ``param`` of the ``k``-th call of ``fn`` in this request, never None."""
        for option in (self._enum, self._from_env, self._pooled, self._numeric):
            got = option(param, fn, k)
            if got is not None:
                self.taken.append(got)
                return got
        fallback = f"{words(param.name)[-1] if words(param.name) else 'item'}-{k + 1}"
        self.taken.append(fallback)
        return fallback

    def pick(self, options: list[Any], param: Param, k: int) -> Any | None:
        usable = [o for o in dict.fromkeys(options) if o is not None and self._clean(o)]
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

    # -- sources, in order of preference ---------------------------------------------------

    def _enum(self, param: Param, fn: Function, k: int) -> Any | None:
        return self.pick(param.enum, param, k) if param.enum else None

    def _from_env(self, param: Param, fn: Function, k: int) -> Any | None:
        if param.type in ("number", "integer", "boolean"):
            same = [v for v in self.env.field(param.name) if isinstance(v, (int, float)) and not isinstance(v, bool)
                    and (param.type == "number" or float(v).is_integer())]
            return self.pick(same, param, k) if same and param.name not in GENERIC and param.type != "boolean" else None
        if param.name in ("username", "user_name", "login"):
            return self._credential(param, k, key=True)
        if param.name in ("password", "passcode"):
            return self._credential(param, k, key=False)
        fresh = fn.description.lower().startswith(_FRESH_VERBS)
        for coll in self._collections(param):
            ids = self.env.members.get(coll) or [v for v in self.env.items.get(coll, []) if isinstance(v, str)]
            ids = self._fitting(coll, ids, param)
            # A user keeps talking about the same account: an id given earlier comes first.
            again = [v for v in self.earlier.get(param.name, [])[::-1] if v in ids]
            if again and not k and not fresh:
                return self.pick(again[:1], param, k)
            if param.type == "array" and ids:
                return [self.pick(ids, param, k + i) for i in range(min(2, len(ids)))]
            if ids and fresh and coll in ("files", "dirs"):
                return _fresh_path(self.pick(ids, param, k), coll, digest(self.salt) + k)
            if ids:
                return self.pick(ids, param, k)
        if param.name not in GENERIC and (same := [v for v in self.env.field(param.name) if isinstance(v, str)]):
            return self.pick(same, param, k)
        if "keyword" in param.name or "query" in param.name or "pattern" in param.name:
            return self.pick(self._env_words(), param, k)
        return None

    def _collections(self, param: Param) -> list[str]:
        """Container names that may hold this parameter's values: ``account_id`` -> ``accounts``."""
        name = param.name.lower().rstrip("0123456789")
        stems = [w for w in name.split("_") if w not in _ID_WORDS] or [name]
        base = [stems[-1], "_".join(stems)] + (words(param.description)[:3] if name.endswith(("_id", "_ids")) else [])
        out = []
        for stem in base:
            out += [f"{stem}s", f"{stem}es", f"{stem[:-1]}ies", stem] + _ALIASES.get(stem, [])
        for word in words(param.description):  # "Folder to enter", "Slot name": what the value names
            out += _ALIASES.get(word, [])
        known = set(self.env.members) | set(self.env.items)
        return [c for c in dict.fromkeys(out) if c in known]

    def _fitting(self, coll: str, ids: list[Any], param: Param) -> list[Any]:
        """Members whose fields mention the parameter's description (``Id of the lock.`` -> a lock)."""
        entries = self.env.entries.get(coll, {})
        wanted = set(words(param.description)) - {"id", "device", "user", "account"}
        good = [i for i in ids if isinstance(entries.get(i), dict)
                and wanted & {w for v in entries[i].values() if isinstance(v, str) for w in words(v)}]
        return good or ids

    def _credential(self, param: Param, k: int, key: bool) -> Any | None:
        for coll in ("credentials", "passwords", "logins", "accounts"):
            pairs = {u: p for u, p in self.env.entries.get(coll, {}).items() if isinstance(p, str)}
            if pairs:
                user = sorted(pairs)[(digest(coll, self.salt) + k) % len(pairs)]
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
