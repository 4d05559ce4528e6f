"""Geography and weather: coordinates, distances, weather, time zones, places, navigation.

Chain: get_coordinates -> latitude/longitude -> get_weather / get_forecast /
get_air_quality / get_timezone -> timezone -> get_local_time / find_nearby_places ->
place_id -> get_place_details; get_distance(city_a, city_b) -> distance_km ->
convert_distance / set_navigation; cities_by_range(city, max_distance_km) -> cities;
set_navigation -> route_id -> get_route_status / cancel_navigation.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal, TypedDict

from graph.toolkit import ToolError, Toolkit, require

_CITIES = {
    "San Francisco": (37.7749, -122.4194, "America/Los_Angeles"), "San Mateo": (37.563, -122.3255, "America/Los_Angeles"),
    "San Jose": (37.3382, -121.8863, "America/Los_Angeles"), "Oakland": (37.8044, -122.2712, "America/Los_Angeles"),
    "Los Angeles": (34.0522, -118.2437, "America/Los_Angeles"), "Seattle": (47.6062, -122.3321, "America/Los_Angeles"),
    "Chicago": (41.8781, -87.6298, "America/Chicago"), "New York": (40.7128, -74.006, "America/New_York"),
    "Boston": (42.3601, -71.0589, "America/New_York"), "London": (51.5074, -0.1278, "Europe/London"),
    "Paris": (48.8566, 2.3522, "Europe/Paris"), "Berlin": (52.52, 13.405, "Europe/Berlin"),
    "Tokyo": (35.6762, 139.6503, "Asia/Tokyo"), "Sydney": (-33.8688, 151.2093, "Australia/Sydney"),
}
_UTC_OFFSET = {"America/Los_Angeles": -8, "America/Chicago": -6, "America/New_York": -5, "Europe/London": 0,
               "Europe/Paris": 1, "Europe/Berlin": 1, "Asia/Tokyo": 9, "Australia/Sydney": 11}
_CONDITIONS = ["sunny", "partly cloudy", "cloudy", "light rain", "rain", "windy", "fog"]
PlaceType = Literal["restaurant", "gas_station", "hotel", "parking", "museum"]


class Coordinates(TypedDict):
    """city: City name.
    latitude: Latitude in degrees.
    longitude: Longitude in degrees."""

    city: str
    latitude: float
    longitude: float


class Weather(TypedDict):
    """temperature_c: Temperature in Celsius.
    condition: Sky condition.
    humidity: Relative humidity in percent.
    wind_kph: Wind speed in km/h."""

    temperature_c: float
    condition: str
    humidity: int
    wind_kph: float


class Forecast(TypedDict):
    """days: One entry per day with day, high_c, low_c and condition."""

    days: list[dict[str, Any]]


class AirQuality(TypedDict):
    """aqi: Air quality index (0-500).
    level: good, moderate or unhealthy."""

    aqi: int
    level: str


class Timezone(TypedDict):
    """timezone: IANA time zone name.
    utc_offset_hours: Offset from UTC."""

    timezone: str
    utc_offset_hours: int


class LocalTime(TypedDict):
    """timezone: The zone.
    local_time: Local time HH:MM."""

    timezone: str
    local_time: str


class Distance(TypedDict):
    """distance_km: Great-circle distance in kilometres.
    city_a: From.
    city_b: To."""

    distance_km: float
    city_a: str
    city_b: str


class Converted(TypedDict):
    """distance: The distance in the requested unit.
    unit: The unit."""

    distance: float
    unit: str


class Cities(TypedDict):
    """cities: Cities within range, nearest first."""

    cities: list[str]


class Place(TypedDict):
    """place_id: Id of the place.
    name: Place name.
    place_type: Kind of place.
    distance_km: Distance from the search point."""

    place_id: str
    name: str
    place_type: str
    distance_km: float


class PlaceList(TypedDict):
    """places: Places found, nearest first."""

    places: list[Place]


class PlaceDetails(TypedDict):
    """place_id: The place.
    name: Name.
    rating: Average rating.
    open_now: Whether it is open.
    phone: Phone number."""

    place_id: str
    name: str
    rating: float
    open_now: bool
    phone: str


class Route(TypedDict):
    """route_id: Id of the active route.
    destination: Where it goes.
    distance_km: Route length.
    eta_minutes: Estimated driving time.
    status: active or cancelled."""

    route_id: str
    destination: str
    distance_km: float
    eta_minutes: int
    status: str


def _haversine(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


class GeoToolkit(Toolkit):
    name = "geo"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        return {"climate_shift": round(rng.uniform(-3, 3), 1), "hour_utc": rng.randrange(24), "routes": {}, "places": {}}

    def _city(self, city: str) -> tuple[str, tuple[float, float, str]]:
        for name, data in _CITIES.items():
            if name.lower() == city.strip().lower():
                return name, data
        raise ToolError(f"city '{city}' not found")

    def _check(self, latitude: float, longitude: float) -> None:
        require(-90 <= latitude <= 90 and -180 <= longitude <= 180, "latitude must be in [-90, 90] and longitude in [-180, 180]")

    def _nearest(self, latitude: float, longitude: float) -> str:
        return min(_CITIES, key=lambda c: _haversine((latitude, longitude), _CITIES[c][:2]))

    def get_coordinates(self, city: str) -> Coordinates:
        """Get the latitude and longitude of a city.

        Args:
            city: City name, e.g. "San Mateo".
        """
        name, (lat, lon, _tz) = self._city(city)
        return Coordinates(city=name, latitude=lat, longitude=lon)

    def get_city_from_coordinates(self, latitude: float, longitude: float) -> Coordinates:
        """Find the known city nearest to a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
        """
        self._check(latitude, longitude)
        name = self._nearest(latitude, longitude)
        return Coordinates(city=name, latitude=_CITIES[name][0], longitude=_CITIES[name][1])

    def get_weather(self, latitude: float, longitude: float) -> Weather:
        """Get the current weather at a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
        """
        self._check(latitude, longitude)
        rng = self.stable_rng("weather", round(latitude, 2), round(longitude, 2))
        temp = 28 - abs(latitude) * 0.4 + self.state["climate_shift"] + rng.uniform(-4, 4)
        return Weather(temperature_c=round(temp, 1), condition=rng.choice(_CONDITIONS), humidity=rng.randrange(30, 95),
                       wind_kph=round(rng.uniform(0, 40), 1))

    def get_forecast(self, latitude: float, longitude: float, days: int = 3) -> Forecast:
        """Get a daily forecast at a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
            days: Number of days, 1 to 7.
        """
        self._check(latitude, longitude)
        require(1 <= days <= 7, "days must be between 1 and 7")
        rng = self.stable_rng("forecast", round(latitude, 2), round(longitude, 2))
        base = 28 - abs(latitude) * 0.4 + self.state["climate_shift"]
        out = []
        for d in range(days):
            high = base + rng.uniform(0, 6)
            out.append({"day": d + 1, "high_c": round(high, 1), "low_c": round(high - rng.uniform(5, 11), 1),
                        "condition": rng.choice(_CONDITIONS)})
        return Forecast(days=out)

    def get_air_quality(self, latitude: float, longitude: float) -> AirQuality:
        """Get the air quality index at a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
        """
        self._check(latitude, longitude)
        aqi = self.stable_rng("aqi", round(latitude, 2), round(longitude, 2)).randrange(5, 180)
        return AirQuality(aqi=aqi, level="good" if aqi <= 50 else "moderate" if aqi <= 100 else "unhealthy")

    def get_timezone(self, latitude: float, longitude: float) -> Timezone:
        """Get the time zone at a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
        """
        self._check(latitude, longitude)
        tz = _CITIES[self._nearest(latitude, longitude)][2]
        return Timezone(timezone=tz, utc_offset_hours=_UTC_OFFSET[tz])

    def get_local_time(self, timezone: str) -> LocalTime:
        """Get the current local time in a time zone.

        Args:
            timezone: IANA name, e.g. "Europe/Paris".
        """
        require(timezone in _UTC_OFFSET, f"unknown timezone '{timezone}'")
        hour = (self.state["hour_utc"] + _UTC_OFFSET[timezone]) % 24
        return LocalTime(timezone=timezone, local_time=f"{hour:02d}:00")

    def get_distance(self, city_a: str, city_b: str) -> Distance:
        """Get the distance between two cities in kilometres.

        Args:
            city_a: Starting city.
            city_b: Destination city.
        """
        a, da = self._city(city_a)
        b, db = self._city(city_b)
        return Distance(distance_km=round(_haversine(da[:2], db[:2]), 1), city_a=a, city_b=b)

    def convert_distance(self, distance_km: float, unit: Literal["mi", "m", "nmi", "ft"]) -> Converted:
        """Convert a distance in kilometres to another unit.

        Args:
            distance_km: Distance in kilometres.
            unit: Target unit: miles, metres, nautical miles or feet.
        """
        require(distance_km >= 0, "distance_km must not be negative")
        factor = {"mi": 0.621371, "m": 1000.0, "nmi": 0.539957, "ft": 3280.84}[unit]
        return Converted(distance=round(distance_km * factor, 3), unit=unit)

    def cities_by_range(self, city: str, max_distance_km: float) -> Cities:
        """List known cities within a distance of a city.

        Args:
            city: Centre city.
            max_distance_km: Radius in kilometres.
        """
        name, data = self._city(city)
        require(max_distance_km > 0, "max_distance_km must be positive")
        near = sorted((_haversine(data[:2], d[:2]), c) for c, d in _CITIES.items() if c != name)
        return Cities(cities=[c for dist, c in near if dist <= max_distance_km])

    def find_nearby_places(self, latitude: float, longitude: float, place_type: PlaceType) -> PlaceList:
        """Find places of a kind near a point.

        Args:
            latitude: Latitude in degrees.
            longitude: Longitude in degrees.
            place_type: Kind of place.
        """
        self._check(latitude, longitude)
        rng = self.stable_rng("places", round(latitude, 2), round(longitude, 2), place_type)
        places = [Place(place_id=f"PL-{place_type[:3].upper()}-{rng.getrandbits(20):05X}",
                        name=f"{rng.choice(['Blue', 'Golden', 'Corner', 'Central', 'Harbor'])} {place_type.replace('_', ' ').title()}",
                        place_type=place_type, distance_km=round(rng.uniform(0.1, 5.0), 2)) for _ in range(3)]
        for p in places:
            self.state["places"][p["place_id"]] = {"name": p["name"], "place_type": place_type}
        return PlaceList(places=sorted(places, key=lambda p: p["distance_km"]))

    def get_place_details(self, place_id: str) -> PlaceDetails:
        """Get the rating, opening status and phone of a place.

        Args:
            place_id: Id from find_nearby_places.
        """
        place = self.state["places"].get(place_id)
        require(place is not None, f"place '{place_id}' not found")
        rng = self.stable_rng("place", place_id)
        return PlaceDetails(place_id=place_id, name=place["name"], rating=round(rng.uniform(3, 5), 1),
                            open_now=rng.random() < 0.7, phone=f"+1-555-{rng.randrange(10**4):04d}")

    def set_navigation(self, destination: str, distance_km: float) -> Route:
        """Start turn-by-turn navigation to a destination.

        Args:
            destination: Destination city or address.
            distance_km: Route length in kilometres (e.g. from get_distance).
        """
        require(destination.strip(), "destination must not be empty")
        require(distance_km > 0, "distance_km must be positive")
        route_id = self.new_id("RT")
        route = Route(route_id=route_id, destination=destination, distance_km=distance_km,
                      eta_minutes=max(1, round(distance_km / 70 * 60)), status="active")
        self.state["routes"][route_id] = dict(route)
        return route

    def get_route_status(self, route_id: str) -> Route:
        """Get the state of a navigation route.

        Args:
            route_id: Id from set_navigation.
        """
        require(route_id in self.state["routes"], f"route '{route_id}' not found")
        return Route(**self.state["routes"][route_id])

    def cancel_navigation(self, route_id: str) -> Route:
        """Stop a navigation route.

        Args:
            route_id: Id from set_navigation.
        """
        require(route_id in self.state["routes"], f"route '{route_id}' not found")
        route = self.state["routes"][route_id]
        require(route["status"] == "active", f"route '{route_id}' is already cancelled")
        route["status"] = "cancelled"
        return Route(**route)
