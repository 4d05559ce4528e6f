"""The built-in toolkits: one module per domain, each a stateful, deterministic Toolkit."""

from __future__ import annotations

from graph.toolkit import Toolkit
from graph.toolkits.banking import BankingToolkit
from graph.toolkits.calendars import CalendarToolkit
from graph.toolkits.files import FilesToolkit
from graph.toolkits.geo import GeoToolkit
from graph.toolkits.mathunits import MathToolkit
from graph.toolkits.messaging import MessagingToolkit
from graph.toolkits.notes import NotesToolkit
from graph.toolkits.shopping import ShoppingToolkit
from graph.toolkits.smarthome import SmartHomeToolkit
from graph.toolkits.travel import TravelToolkit

_BUILTINS: tuple[type[Toolkit], ...] = (
    TravelToolkit,
    GeoToolkit,
    FilesToolkit,
    MessagingToolkit,
    CalendarToolkit,
    BankingToolkit,
    ShoppingToolkit,
    MathToolkit,
    NotesToolkit,
    SmartHomeToolkit,
)


def builtin_toolkits() -> dict[str, type[Toolkit]]:
    """Toolkit name -> class, for every built-in domain."""
    return {cls.toolkit_name(): cls for cls in _BUILTINS}
