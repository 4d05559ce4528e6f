"""Calendar: events, attendees, free slots, conflicts, reminders, RSVPs.

Chain: find_free_slot(date, duration_minutes) -> start_time -> create_event -> event_id ->
get_event / update_event / invite_attendee(email) / set_reminder -> reminder_id ->
cancel_reminder; list_events(date) -> event_id -> delete_event / rsvp_event;
check_conflicts(date, start_time, duration_minutes) -> has_conflict.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, Literal, TypedDict

from graph.toolkit import ToolError, Toolkit, require

_TITLES = ["Team sync", "Dentist", "Project review", "Lunch with Sam", "Gym", "1:1 with manager", "Budget planning"]


class Event(TypedDict):
    """event_id: Id of the event.
    title: Event title.
    date: Day YYYY-MM-DD.
    start_time: Start HH:MM.
    duration_minutes: Length in minutes.
    location: Where.
    attendees: Invited e-mail addresses."""

    event_id: str
    title: str
    date: str
    start_time: str
    duration_minutes: int
    location: str
    attendees: list[str]


class EventList(TypedDict):
    """events: Events of the day, by start time."""

    events: list[Event]


class Slot(TypedDict):
    """date: Day YYYY-MM-DD.
    start_time: First free start HH:MM.
    duration_minutes: Length of the slot."""

    date: str
    start_time: str
    duration_minutes: int


class Conflicts(TypedDict):
    """has_conflict: Whether the slot overlaps an event.
    conflicting_event_ids: Events it overlaps."""

    has_conflict: bool
    conflicting_event_ids: list[str]


class Reminder(TypedDict):
    """reminder_id: Id of the reminder.
    event_id: Event it belongs to.
    minutes_before: When it fires."""

    reminder_id: str
    event_id: str
    minutes_before: int


class Done(TypedDict):
    """success: Whether the change was made.
    detail: What changed."""

    success: bool
    detail: str


def _minutes(time: str) -> int:
    try:
        t = dt.time.fromisoformat(time)
    except ValueError:
        raise ToolError(f"invalid time '{time}'; use HH:MM") from None
    return t.hour * 60 + t.minute


def _day(date: str) -> str:
    try:
        return dt.date.fromisoformat(date).isoformat()
    except ValueError:
        raise ToolError(f"invalid date '{date}'; use YYYY-MM-DD") from None


class CalendarToolkit(Toolkit):
    name = "calendar"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        events = {}
        for n in range(5):
            day = f"2025-03-{10 + rng.randrange(5):02d}"
            events[f"EV-{n + 1:04d}"] = {"title": rng.choice(_TITLES), "date": day,
                                         "start_time": f"{rng.randrange(8, 17):02d}:{rng.choice(['00', '30'])}",
                                         "duration_minutes": rng.choice([30, 45, 60, 90]), "location": "Office",
                                         "attendees": [], "rsvp": "accepted"}
        return {"events": events, "reminders": {}}

    def _event(self, event_id: str) -> dict[str, Any]:
        require(event_id in self.state["events"], f"event '{event_id}' not found")
        return self.state["events"][event_id]

    def _view(self, event_id: str) -> Event:
        e = self._event(event_id)
        return Event(event_id=event_id, title=e["title"], date=e["date"], start_time=e["start_time"],
                     duration_minutes=e["duration_minutes"], location=e["location"], attendees=list(e["attendees"]))

    def _overlaps(self, date: str, start: int, duration: int, skip: str = "") -> list[str]:
        return sorted(k for k, e in self.state["events"].items()
                      if k != skip and e["date"] == date and e["rsvp"] != "declined"
                      and _minutes(e["start_time"]) < start + duration and start < _minutes(e["start_time"]) + e["duration_minutes"])

    def create_event(self, title: str, date: str, start_time: str, duration_minutes: int = 60, location: str = "") -> Event:
        """Add an event to the calendar.

        Args:
            title: Event title.
            date: Day YYYY-MM-DD.
            start_time: Start HH:MM (24h).
            duration_minutes: Length in minutes.
            location: Where it happens.
        """
        day, start = _day(date), _minutes(start_time)
        require(0 < duration_minutes <= 24 * 60, "duration_minutes must be between 1 and 1440")
        require(start + duration_minutes <= 24 * 60, "the event must end on the same day")
        event_id = self.new_id("EV")
        self.state["events"][event_id] = {"title": title, "date": day, "start_time": start_time,
                                          "duration_minutes": duration_minutes, "location": location,
                                          "attendees": [], "rsvp": "accepted"}
        return self._view(event_id)

    def get_event(self, event_id: str) -> Event:
        """Get an event's details.

        Args:
            event_id: Id of the event.
        """
        return self._view(event_id)

    def list_events(self, date: str) -> EventList:
        """List the events of a day.

        Args:
            date: Day YYYY-MM-DD.
        """
        day = _day(date)
        ids = sorted((e["start_time"], k) for k, e in self.state["events"].items() if e["date"] == day)
        return EventList(events=[self._view(k) for _t, k in ids])

    def update_event(self, event_id: str, title: str | None = None, start_time: str | None = None,
                     location: str | None = None) -> Event:
        """Change an event's title, start time or location.

        Args:
            event_id: Id of the event.
            title: New title.
            start_time: New start HH:MM.
            location: New location.
        """
        e = self._event(event_id)
        require(title is not None or start_time is not None or location is not None, "nothing to update")
        if start_time is not None:
            require(_minutes(start_time) + e["duration_minutes"] <= 24 * 60, "the event must end on the same day")
            e["start_time"] = start_time
        if title is not None:
            e["title"] = title
        if location is not None:
            e["location"] = location
        return self._view(event_id)

    def delete_event(self, event_id: str) -> Done:
        """Remove an event and its reminders.

        Args:
            event_id: Id of the event.
        """
        self._event(event_id)
        del self.state["events"][event_id]
        self.state["reminders"] = {k: r for k, r in self.state["reminders"].items() if r["event_id"] != event_id}
        return Done(success=True, detail=f"deleted {event_id}")

    def invite_attendee(self, event_id: str, email: str) -> Event:
        """Invite someone to an event.

        Args:
            event_id: Id of the event.
            email: The invitee's e-mail address.
        """
        e = self._event(event_id)
        require("@" in email and "." in email.split("@")[-1], f"invalid email '{email}'")
        require(email not in e["attendees"], f"'{email}' is already invited")
        e["attendees"].append(email)
        return self._view(event_id)

    def remove_attendee(self, event_id: str, email: str) -> Event:
        """Withdraw an invitation.

        Args:
            event_id: Id of the event.
            email: The invitee's e-mail address.
        """
        e = self._event(event_id)
        require(email in e["attendees"], f"'{email}' is not invited to '{event_id}'")
        e["attendees"].remove(email)
        return self._view(event_id)

    def find_free_slot(self, date: str, duration_minutes: int, earliest: str = "09:00", latest: str = "18:00") -> Slot:
        """Find the first free time on a day that fits a meeting.

        Args:
            date: Day YYYY-MM-DD.
            duration_minutes: Length needed in minutes.
            earliest: Do not start before HH:MM.
            latest: Finish by HH:MM.
        """
        day = _day(date)
        require(duration_minutes > 0, "duration_minutes must be positive")
        start, end = _minutes(earliest), _minutes(latest)
        while start + duration_minutes <= end:
            if not self._overlaps(day, start, duration_minutes):
                return Slot(date=day, start_time=f"{start // 60:02d}:{start % 60:02d}", duration_minutes=duration_minutes)
            start += 15
        raise ToolError(f"no free {duration_minutes}-minute slot on {day} between {earliest} and {latest}")

    def check_conflicts(self, date: str, start_time: str, duration_minutes: int) -> Conflicts:
        """Check whether a time slot overlaps existing events.

        Args:
            date: Day YYYY-MM-DD.
            start_time: Start HH:MM.
            duration_minutes: Length in minutes.
        """
        hits = self._overlaps(_day(date), _minutes(start_time), duration_minutes)
        return Conflicts(has_conflict=bool(hits), conflicting_event_ids=hits)

    def set_reminder(self, event_id: str, minutes_before: int = 15) -> Reminder:
        """Add a reminder before an event.

        Args:
            event_id: Id of the event.
            minutes_before: How long before the start it fires.
        """
        self._event(event_id)
        require(0 <= minutes_before <= 7 * 24 * 60, "minutes_before must be between 0 and 10080")
        reminder_id = self.new_id("REM")
        self.state["reminders"][reminder_id] = {"event_id": event_id, "minutes_before": minutes_before}
        return Reminder(reminder_id=reminder_id, event_id=event_id, minutes_before=minutes_before)

    def cancel_reminder(self, reminder_id: str) -> Done:
        """Remove a reminder.

        Args:
            reminder_id: Id from set_reminder.
        """
        require(reminder_id in self.state["reminders"], f"reminder '{reminder_id}' not found")
        del self.state["reminders"][reminder_id]
        return Done(success=True, detail=f"cancelled {reminder_id}")

    def rsvp_event(self, event_id: str, response: Literal["accepted", "declined", "tentative"]) -> Done:
        """Answer an event invitation.

        Args:
            event_id: Id of the event.
            response: The answer.
        """
        self._event(event_id)["rsvp"] = response
        return Done(success=True, detail=f"{event_id} {response}")
