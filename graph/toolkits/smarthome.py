"""Smart home: rooms, devices, thermostat, lights, locks, scenes, schedules, energy.

Chain: list_rooms -> room -> list_devices(room) -> device_id -> get_device_status /
set_power / set_thermostat / set_light / get_energy_usage; get_lock_pin -> pin ->
unlock_door(device_id, pin); create_scene(device_ids) -> scene_id -> activate_scene;
schedule_action(device_id) -> schedule_id -> cancel_schedule.
"""

from __future__ import annotations

import random
from typing import Any, Literal, TypedDict

from graph.toolkit import Toolkit, require

_DEVICES = [("thermostat", "living room"), ("light", "living room"), ("light", "kitchen"), ("light", "bedroom"),
            ("lock", "front door"), ("plug", "kitchen"), ("speaker", "living room"), ("light", "office")]


class Room(TypedDict):
    """room: Room name.
    device_count: Devices in it."""

    room: str
    device_count: int


class RoomList(TypedDict):
    """rooms: The home's rooms."""

    rooms: list[Room]


class Device(TypedDict):
    """device_id: Id of the device.
    device_type: thermostat, light, lock, plug or speaker.
    room: Where it is.
    power: on or off.
    settings: Type-specific settings (temperature_c, brightness, color, locked)."""

    device_id: str
    device_type: str
    room: str
    power: str
    settings: dict[str, Any]


class DeviceList(TypedDict):
    """devices: Devices found."""

    devices: list[Device]


class LockPin(TypedDict):
    """device_id: The lock.
    pin: One-time PIN that unlocks it."""

    device_id: str
    pin: str


class Scene(TypedDict):
    """scene_id: Id of the scene.
    name: Scene name.
    device_ids: Devices it switches on."""

    scene_id: str
    name: str
    device_ids: list[str]


class Schedule(TypedDict):
    """schedule_id: Id of the schedule.
    device_id: Device it controls.
    action: turn_on or turn_off.
    time: Daily time HH:MM."""

    schedule_id: str
    device_id: str
    action: str
    time: str


class Energy(TypedDict):
    """device_id: The device.
    energy_kwh: Energy used in the last period.
    cost_usd: Cost of that energy."""

    device_id: str
    energy_kwh: float
    cost_usd: float


class Cancelled(TypedDict):
    """schedule_id: The schedule removed.
    cancelled: Always true."""

    schedule_id: str
    cancelled: bool


class SmartHomeToolkit(Toolkit):
    name = "smarthome"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        devices = {}
        for i, (kind, room) in enumerate(_DEVICES):
            settings: dict[str, Any] = {"thermostat": {"temperature_c": float(rng.randrange(18, 24))},
                                        "light": {"brightness": rng.randrange(10, 100), "color": "warm white"},
                                        "lock": {"locked": True}}.get(kind, {})
            devices[f"DEV-{i + 1:03d}"] = {"device_type": kind, "room": room, "power": rng.choice(["on", "off"]),
                                           "settings": settings, "hours_on": rng.randrange(1, 200)}
        return {"devices": devices, "scenes": {}, "schedules": {}, "pins": {}, "price_kwh": 0.21}

    def _device(self, device_id: str, kind: str | None = None) -> dict[str, Any]:
        require(device_id in self.state["devices"], f"device '{device_id}' not found")
        d = self.state["devices"][device_id]
        require(kind is None or d["device_type"] == kind, f"device '{device_id}' is a {d['device_type']}, not a {kind}")
        return d

    def _view(self, device_id: str) -> Device:
        d = self._device(device_id)
        return Device(device_id=device_id, device_type=d["device_type"], room=d["room"], power=d["power"],
                      settings=dict(d["settings"]))

    def list_rooms(self) -> RoomList:
        """List the rooms that have devices."""
        rooms: dict[str, int] = {}
        for d in self.state["devices"].values():
            rooms[d["room"]] = rooms.get(d["room"], 0) + 1
        return RoomList(rooms=[Room(room=r, device_count=n) for r, n in sorted(rooms.items())])

    def list_devices(self, room: str | None = None,
                     device_type: Literal["thermostat", "light", "lock", "plug", "speaker"] | None = None) -> DeviceList:
        """List devices, optionally in one room or of one type.

        Args:
            room: Only devices in this room.
            device_type: Only devices of this type.
        """
        ids = [k for k, d in self.state["devices"].items()
               if (room is None or d["room"] == room) and (device_type is None or d["device_type"] == device_type)]
        require(ids or room is None, f"room '{room}' not found or has no such devices")
        return DeviceList(devices=[self._view(k) for k in ids])

    def get_device_status(self, device_id: str) -> Device:
        """Get a device's power state and settings.

        Args:
            device_id: Id of the device.
        """
        return self._view(device_id)

    def set_power(self, device_id: str, power: Literal["on", "off"]) -> Device:
        """Switch a device on or off.

        Args:
            device_id: Id of the device.
            power: on or off.
        """
        d = self._device(device_id)
        require(d["device_type"] != "lock", "locks have no power switch; use lock_door or unlock_door")
        d["power"] = power
        return self._view(device_id)

    def set_thermostat(self, device_id: str, temperature_c: float) -> Device:
        """Set a thermostat's target temperature.

        Args:
            device_id: Id of the thermostat.
            temperature_c: Target in Celsius (10-30).
        """
        d = self._device(device_id, "thermostat")
        require(10 <= temperature_c <= 30, "temperature_c must be between 10 and 30")
        d["settings"]["temperature_c"] = temperature_c
        d["power"] = "on"
        return self._view(device_id)

    def set_light(self, device_id: str, brightness: int, color: str = "warm white") -> Device:
        """Set a light's brightness and colour (turns it on).

        Args:
            device_id: Id of the light.
            brightness: Percent, 1-100.
            color: Colour name, e.g. "blue".
        """
        d = self._device(device_id, "light")
        require(1 <= brightness <= 100, "brightness must be between 1 and 100")
        d["settings"].update(brightness=brightness, color=color)
        d["power"] = "on"
        return self._view(device_id)

    def lock_door(self, device_id: str) -> Device:
        """Lock a smart lock.

        Args:
            device_id: Id of the lock.
        """
        self._device(device_id, "lock")["settings"]["locked"] = True
        return self._view(device_id)

    def get_lock_pin(self, device_id: str) -> LockPin:
        """Get a one-time PIN for a smart lock.

        Args:
            device_id: Id of the lock.
        """
        self._device(device_id, "lock")
        pin = f"{self.stable_rng('pin', device_id, len(self.state['pins'])).randrange(10**6):06d}"
        self.state["pins"][device_id] = pin
        return LockPin(device_id=device_id, pin=pin)

    def unlock_door(self, device_id: str, pin: str) -> Device:
        """Unlock a smart lock with a one-time PIN.

        Args:
            device_id: Id of the lock.
            pin: PIN from get_lock_pin.
        """
        d = self._device(device_id, "lock")
        require(self.state["pins"].get(device_id) == pin, "wrong or expired pin; call get_lock_pin")
        del self.state["pins"][device_id]
        d["settings"]["locked"] = False
        return self._view(device_id)

    def create_scene(self, name: str, device_ids: list[str]) -> Scene:
        """Save a scene: a set of devices switched on together.

        Args:
            name: Scene name, e.g. "movie night".
            device_ids: Devices in the scene.
        """
        require(device_ids, "device_ids must not be empty")
        for device_id in device_ids:
            self._device(device_id)
        scene_id = self.new_id("SCN")
        self.state["scenes"][scene_id] = {"name": name, "device_ids": list(device_ids)}
        return Scene(scene_id=scene_id, name=name, device_ids=list(device_ids))

    def activate_scene(self, scene_id: str) -> DeviceList:
        """Switch on every device of a scene.

        Args:
            scene_id: Id from create_scene.
        """
        require(scene_id in self.state["scenes"], f"scene '{scene_id}' not found")
        ids = self.state["scenes"][scene_id]["device_ids"]
        for device_id in ids:
            if self.state["devices"][device_id]["device_type"] != "lock":
                self.state["devices"][device_id]["power"] = "on"
        return DeviceList(devices=[self._view(k) for k in ids])

    def schedule_action(self, device_id: str, action: Literal["turn_on", "turn_off"], time: str) -> Schedule:
        """Switch a device on or off every day at a time.

        Args:
            device_id: Id of the device.
            action: What to do.
            time: Daily time HH:MM (24h).
        """
        self._device(device_id)
        hh, _, mm = time.partition(":")
        require(hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60 and len(mm) == 2, f"invalid time '{time}'; use HH:MM")
        schedule_id = self.new_id("SCH")
        self.state["schedules"][schedule_id] = {"device_id": device_id, "action": action, "time": time}
        return Schedule(schedule_id=schedule_id, device_id=device_id, action=action, time=time)

    def cancel_schedule(self, schedule_id: str) -> Cancelled:
        """Remove a schedule.

        Args:
            schedule_id: Id from schedule_action.
        """
        require(schedule_id in self.state["schedules"], f"schedule '{schedule_id}' not found")
        del self.state["schedules"][schedule_id]
        return Cancelled(schedule_id=schedule_id, cancelled=True)

    def get_energy_usage(self, device_id: str) -> Energy:
        """Get a device's energy use this month and its cost.

        Args:
            device_id: Id of the device.
        """
        d = self._device(device_id)
        watts = {"thermostat": 1500, "light": 9, "lock": 1, "plug": 60, "speaker": 12}[d["device_type"]]
        kwh = round(watts * d["hours_on"] / 1000, 3)
        return Energy(device_id=device_id, energy_kwh=kwh, cost_usd=round(kwh * self.state["price_kwh"], 2))
