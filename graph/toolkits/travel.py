"""Travel booking: airports, flights, cards, bookings, insurance, invoices.

Chain: authenticate_travel -> access_token; get_airport_code -> airport_code ->
search_flights -> flight_id -> get_flight_cost -> price; register_credit_card -> card_id;
book_flight(card_id, flight_id) -> booking_id -> purchase_insurance / retrieve_invoice /
cancel_booking / contact_customer_support.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, Literal, TypedDict

from graph.toolkit import ToolError, Toolkit, require

TravelClass = Literal["economy", "business", "first"]
_CLASS_FACTOR = {"economy": 1.0, "business": 2.6, "first": 4.1}
_AIRPORTS = {
    "SFO": ("San Francisco", "USA"), "LAX": ("Los Angeles", "USA"), "JFK": ("New York", "USA"),
    "ORD": ("Chicago", "USA"), "SEA": ("Seattle", "USA"), "BOS": ("Boston", "USA"),
    "LHR": ("London", "UK"), "CDG": ("Paris", "France"), "HND": ("Tokyo", "Japan"),
    "SIN": ("Singapore", "Singapore"), "SYD": ("Sydney", "Australia"), "FRA": ("Frankfurt", "Germany"),
}


class Airport(TypedDict):
    """airport_code: IATA code, e.g. SFO.
    city: City served.
    country: Country."""

    airport_code: str
    city: str
    country: str


class AirportList(TypedDict):
    """airports: Every airport the service flies to."""

    airports: list[Airport]


class AuthResult(TypedDict):
    """access_token: Token for calls that need authentication.
    expires_in: Validity in seconds."""

    access_token: str
    expires_in: int


class Flight(TypedDict):
    """flight_id: Id of the flight, used to price and book it.
    origin_airport: Departure airport code.
    destination_airport: Arrival airport code.
    travel_date: Date YYYY-MM-DD.
    departure_time: Local HH:MM.
    price: Fare in USD for the requested class.
    seats_left: Seats still available."""

    flight_id: str
    origin_airport: str
    destination_airport: str
    travel_date: str
    departure_time: str
    price: float
    seats_left: int


class FlightList(TypedDict):
    """flights: Matching flights, cheapest first."""

    flights: list[Flight]


class FlightCost(TypedDict):
    """flight_id: The flight priced.
    travel_class: Cabin class.
    price: Fare in USD.
    currency: Always USD."""

    flight_id: str
    travel_class: str
    price: float
    currency: str


class Card(TypedDict):
    """card_id: Id of the stored card, used to pay.
    cardholder_name: Name on the card.
    last4: Last four digits.
    balance: Available credit in USD."""

    card_id: str
    cardholder_name: str
    last4: str
    balance: float


class CardList(TypedDict):
    """cards: The user's stored cards."""

    cards: list[Card]


class Booking(TypedDict):
    """booking_id: Id of the booking.
    flight_id: The booked flight.
    card_id: Card charged.
    travel_class: Cabin class.
    price: Amount charged in USD.
    status: confirmed or cancelled.
    passenger_name: Passenger on the ticket."""

    booking_id: str
    flight_id: str
    card_id: str
    travel_class: str
    price: float
    status: str
    passenger_name: str


class Insurance(TypedDict):
    """insurance_id: Id of the policy.
    booking_id: Booking insured.
    insurance_cost: Premium charged in USD."""

    insurance_id: str
    booking_id: str
    insurance_cost: float


class Cancellation(TypedDict):
    """booking_id: The cancelled booking.
    status: Now cancelled.
    refund_amount: USD refunded to the card."""

    booking_id: str
    status: str
    refund_amount: float


class Invoice(TypedDict):
    """invoice_id: Invoice number.
    booking_id: Booking invoiced.
    total_amount: Total charged in USD.
    items: Line items (fare, insurance)."""

    invoice_id: str
    booking_id: str
    total_amount: float
    items: list[dict[str, Any]]


class Budget(TypedDict):
    """budget_limit: Maximum fare in USD a booking may cost."""

    budget_limit: float


class SupportTicket(TypedDict):
    """ticket_id: Support case id.
    booking_id: Booking concerned.
    response: The agent's first answer."""

    ticket_id: str
    booking_id: str
    response: str


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ToolError(f"invalid date '{value}'; use YYYY-MM-DD") from None


class TravelToolkit(Toolkit):
    name = "travel"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        names = ["Alex Kim", "Maria Lopez", "Sam Patel", "Jordan Lee"]
        holder = rng.choice(names)
        card = f"CC-{rng.getrandbits(24):06X}"
        return {
            "credentials": {"traveler": "travel123"},
            "tokens": [],
            "cards": {card: {"cardholder_name": holder, "number": f"4{rng.randrange(10**15):015d}",
                             "expiry_date": "12/29", "balance": float(rng.randrange(2000, 9000))}},
            "bookings": {},
            "insurances": {},
            "budget_limit": None,
            "tickets": {},
        }

    def _auth(self, access_token: str) -> None:
        require(access_token in self.state["tokens"], "invalid or expired access_token; call authenticate_travel")

    def _card(self, card_id: str) -> dict[str, Any]:
        require(card_id in self.state["cards"], f"card '{card_id}' not found")
        return self.state["cards"][card_id]

    def _booking(self, booking_id: str) -> dict[str, Any]:
        require(booking_id in self.state["bookings"], f"booking '{booking_id}' not found")
        return self.state["bookings"][booking_id]

    def _flights(self, origin: str, destination: str, day: dt.date, travel_class: str) -> list[Flight]:
        rng = self.stable_rng("flights", origin, destination, day.isoformat())
        base = 120 + rng.randrange(80, 900)
        flights = []
        for n in range(1, 4):
            fare = round((base + rng.randrange(0, 250)) * _CLASS_FACTOR[travel_class], 2)
            flights.append(Flight(
                flight_id=f"FL-{origin}-{destination}-{day:%Y%m%d}-{n}", origin_airport=origin,
                destination_airport=destination, travel_date=day.isoformat(),
                departure_time=f"{6 + 4 * n + rng.randrange(0, 3):02d}:{rng.choice(['00', '15', '30', '45'])}",
                price=fare, seats_left=rng.randrange(1, 40),
            ))
        return sorted(flights, key=lambda f: f["price"])

    def _flight(self, flight_id: str, travel_class: str) -> Flight:
        parts = flight_id.split("-")
        require(len(parts) == 5 and parts[0] == "FL", f"flight '{flight_id}' not found")
        _, origin, destination, day, _n = parts
        require(origin in _AIRPORTS and destination in _AIRPORTS, f"flight '{flight_id}' not found")
        try:
            date = dt.datetime.strptime(day, "%Y%m%d").date()
        except ValueError:
            raise ToolError(f"flight '{flight_id}' not found") from None
        found = [f for f in self._flights(origin, destination, date, travel_class) if f["flight_id"] == flight_id]
        require(found, f"flight '{flight_id}' not found")
        return found[0]

    def authenticate_travel(self, username: str, password: str) -> AuthResult:
        """Log in to the travel service.

        Args:
            username: Account user name.
            password: Account password.
        """
        require(self.state["credentials"].get(username) == password, "authentication failed: wrong username or password")
        token = self.new_id("TOK")
        self.state["tokens"].append(token)
        return AuthResult(access_token=token, expires_in=3600)

    def list_airports(self) -> AirportList:
        """List every airport the travel service serves."""
        return AirportList(airports=[Airport(airport_code=c, city=v[0], country=v[1]) for c, v in _AIRPORTS.items()])

    def get_airport_code(self, city: str) -> Airport:
        """Find the airport serving a city.

        Args:
            city: City name, e.g. "Paris".
        """
        for code, (name, country) in _AIRPORTS.items():
            if name.lower() == city.strip().lower():
                return Airport(airport_code=code, city=name, country=country)
        raise ToolError(f"no airport found for city '{city}'")

    def search_flights(
        self, origin_airport: str, destination_airport: str, travel_date: str, travel_class: TravelClass = "economy"
    ) -> FlightList:
        """Search flights between two airports on a date.

        Args:
            origin_airport: Departure airport code, e.g. SFO.
            destination_airport: Arrival airport code, e.g. JFK.
            travel_date: Date of travel, YYYY-MM-DD.
            travel_class: Cabin class.
        """
        for code in (origin_airport, destination_airport):
            require(code in _AIRPORTS, f"unknown airport code '{code}'")
        require(origin_airport != destination_airport, "origin_airport and destination_airport must differ")
        return FlightList(flights=self._flights(origin_airport, destination_airport, _date(travel_date), travel_class))

    def get_flight_cost(self, flight_id: str, travel_class: TravelClass = "economy") -> FlightCost:
        """Get the fare of a flight in a cabin class.

        Args:
            flight_id: Flight id from search_flights.
            travel_class: Cabin class.
        """
        flight = self._flight(flight_id, travel_class)
        return FlightCost(flight_id=flight_id, travel_class=travel_class, price=flight["price"], currency="USD")

    def register_credit_card(
        self, access_token: str, card_number: str, expiry_date: str, cardholder_name: str
    ) -> Card:
        """Store a credit card for payments.

        Args:
            access_token: Token from authenticate_travel.
            card_number: 16-digit card number.
            expiry_date: Expiry as MM/YY.
            cardholder_name: Name on the card.
        """
        self._auth(access_token)
        digits = card_number.replace(" ", "")
        require(digits.isdigit() and len(digits) == 16, "card_number must have 16 digits")
        require(len(expiry_date) == 5 and expiry_date[2] == "/", "expiry_date must be MM/YY")
        card_id = self.new_id("CC")
        self.state["cards"][card_id] = {"cardholder_name": cardholder_name, "number": digits,
                                        "expiry_date": expiry_date, "balance": 5000.0}
        return Card(card_id=card_id, cardholder_name=cardholder_name, last4=digits[-4:], balance=5000.0)

    def list_credit_cards(self, access_token: str) -> CardList:
        """List the stored credit cards.

        Args:
            access_token: Token from authenticate_travel.
        """
        self._auth(access_token)
        return CardList(cards=[Card(card_id=k, cardholder_name=v["cardholder_name"], last4=v["number"][-4:],
                                    balance=v["balance"]) for k, v in self.state["cards"].items()])

    def get_card_balance(self, access_token: str, card_id: str) -> Card:
        """Get the available balance of a stored card.

        Args:
            access_token: Token from authenticate_travel.
            card_id: Id of the card.
        """
        self._auth(access_token)
        card = self._card(card_id)
        return Card(card_id=card_id, cardholder_name=card["cardholder_name"], last4=card["number"][-4:],
                    balance=card["balance"])

    def set_budget_limit(self, access_token: str, budget_limit: float) -> Budget:
        """Set the maximum fare a booking may cost.

        Args:
            access_token: Token from authenticate_travel.
            budget_limit: Limit in USD.
        """
        self._auth(access_token)
        require(budget_limit > 0, "budget_limit must be positive")
        self.state["budget_limit"] = budget_limit
        return Budget(budget_limit=budget_limit)

    def book_flight(
        self, access_token: str, card_id: str, flight_id: str, passenger_name: str, travel_class: TravelClass = "economy"
    ) -> Booking:
        """Book a flight and charge the fare to a stored card.

        Args:
            access_token: Token from authenticate_travel.
            card_id: Card to charge.
            flight_id: Flight id from search_flights.
            passenger_name: Full name of the passenger.
            travel_class: Cabin class.
        """
        self._auth(access_token)
        card = self._card(card_id)
        price = self._flight(flight_id, travel_class)["price"]
        limit = self.state["budget_limit"]
        require(limit is None or price <= limit, f"fare {price} exceeds the budget limit {limit}")
        require(card["balance"] >= price, f"insufficient funds on card '{card_id}': balance {card['balance']}, fare {price}")
        card["balance"] = round(card["balance"] - price, 2)
        booking_id = self.new_id("BK")
        booking = Booking(booking_id=booking_id, flight_id=flight_id, card_id=card_id, travel_class=travel_class,
                          price=price, status="confirmed", passenger_name=passenger_name)
        self.state["bookings"][booking_id] = dict(booking)
        return booking

    def get_booking(self, booking_id: str) -> Booking:
        """Get the details of a booking.

        Args:
            booking_id: Id of the booking.
        """
        return Booking(**self._booking(booking_id))

    def purchase_insurance(
        self, access_token: str, booking_id: str, card_id: str, insurance_type: Literal["basic", "comprehensive"] = "basic"
    ) -> Insurance:
        """Buy travel insurance for a booking.

        Args:
            access_token: Token from authenticate_travel.
            booking_id: Booking to insure.
            card_id: Card to charge the premium to.
            insurance_type: Coverage level.
        """
        self._auth(access_token)
        booking = self._booking(booking_id)
        require(booking["status"] == "confirmed", f"booking '{booking_id}' is cancelled")
        require(booking_id not in {i["booking_id"] for i in self.state["insurances"].values()},
                f"booking '{booking_id}' is already insured")
        card = self._card(card_id)
        cost = round(booking["price"] * (0.05 if insurance_type == "basic" else 0.12), 2)
        require(card["balance"] >= cost, f"insufficient funds on card '{card_id}'")
        card["balance"] = round(card["balance"] - cost, 2)
        insurance_id = self.new_id("INS")
        self.state["insurances"][insurance_id] = {"booking_id": booking_id, "cost": cost, "type": insurance_type}
        return Insurance(insurance_id=insurance_id, booking_id=booking_id, insurance_cost=cost)

    def cancel_booking(self, access_token: str, booking_id: str) -> Cancellation:
        """Cancel a booking and refund the fare to the card it was charged to.

        Args:
            access_token: Token from authenticate_travel.
            booking_id: Booking to cancel.
        """
        self._auth(access_token)
        booking = self._booking(booking_id)
        require(booking["status"] == "confirmed", f"booking '{booking_id}' is already cancelled")
        booking["status"] = "cancelled"
        card = self._card(booking["card_id"])
        card["balance"] = round(card["balance"] + booking["price"], 2)
        return Cancellation(booking_id=booking_id, status="cancelled", refund_amount=booking["price"])

    def retrieve_invoice(self, access_token: str, booking_id: str) -> Invoice:
        """Get the invoice of a booking, fare and insurance included.

        Args:
            access_token: Token from authenticate_travel.
            booking_id: Booking to invoice.
        """
        self._auth(access_token)
        booking = self._booking(booking_id)
        items: list[dict[str, Any]] = [{"item": f"fare {booking['flight_id']}", "amount": booking["price"]}]
        items += [{"item": f"insurance {k}", "amount": v["cost"]}
                  for k, v in self.state["insurances"].items() if v["booking_id"] == booking_id]
        total = round(sum(i["amount"] for i in items), 2)
        return Invoice(invoice_id=f"INV-{booking_id[3:]}", booking_id=booking_id, total_amount=total, items=items)

    def contact_customer_support(self, booking_id: str, message: str) -> SupportTicket:
        """Open a support case about a booking.

        Args:
            booking_id: Booking the question is about.
            message: The question or complaint.
        """
        self._booking(booking_id)
        require(message.strip(), "message must not be empty")
        ticket_id = self.new_id("SUP")
        self.state["tickets"][ticket_id] = {"booking_id": booking_id, "message": message}
        return SupportTicket(ticket_id=ticket_id, booking_id=booking_id,
                             response=f"Thanks, we opened case {ticket_id} about booking {booking_id}.")
