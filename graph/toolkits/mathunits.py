"""Math and units: arithmetic, statistics, finance formulas, unit conversion, a named memory.

Chain: any function -> result -> store_result(name, value) -> recall_result(name) -> value
-> the next calculation; mean / standard_deviation over numbers; percentage(part, whole) ->
result; convert_length / convert_weight / convert_temperature -> result.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any, Literal, TypedDict

from graph.toolkit import ToolError, Toolkit, require

LengthUnit = Literal["mm", "cm", "m", "km", "in", "ft", "yd", "mi"]
WeightUnit = Literal["mg", "g", "kg", "oz", "lb"]
TempUnit = Literal["celsius", "fahrenheit", "kelvin"]
_LENGTH_M = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "yd": 0.9144, "mi": 1609.344}
_WEIGHT_G = {"mg": 0.001, "g": 1.0, "kg": 1000.0, "oz": 28.349523125, "lb": 453.59237}


class Result(TypedDict):
    """result: The computed value."""

    result: float


class Stored(TypedDict):
    """name: Memory slot name.
    value: The value stored or recalled."""

    name: str
    value: float


def _finite(x: float) -> Result:
    require(math.isfinite(x), "result is too large to represent")
    return Result(result=round(x, 10))


class MathToolkit(Toolkit):
    name = "math"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        return {"memory": {"pi": round(math.pi, 10), "lucky": float(rng.randrange(1, 100))}, "history": []}

    def _done(self, op: str, x: float) -> Result:
        out = _finite(x)
        self.state["history"].append([op, out["result"]])
        return out

    def add(self, a: float, b: float) -> Result:
        """Add two numbers.

        Args:
            a: First number.
            b: Second number.
        """
        return self._done("add", a + b)

    def subtract(self, a: float, b: float) -> Result:
        """Subtract b from a.

        Args:
            a: Number to subtract from.
            b: Number to subtract.
        """
        return self._done("subtract", a - b)

    def multiply(self, a: float, b: float) -> Result:
        """Multiply two numbers.

        Args:
            a: First factor.
            b: Second factor.
        """
        return self._done("multiply", a * b)

    def divide(self, a: float, b: float) -> Result:
        """Divide a by b.

        Args:
            a: Dividend.
            b: Divisor (not zero).
        """
        require(b != 0, "division by zero")
        return self._done("divide", a / b)

    def power(self, base: float, exponent: float) -> Result:
        """Raise a number to a power.

        Args:
            base: The base.
            exponent: The exponent.
        """
        require(not (base < 0 and not float(exponent).is_integer()), "negative base needs an integer exponent")
        require(not (base == 0 and exponent < 0), "zero cannot be raised to a negative power")
        try:
            value = base**exponent
        except OverflowError:
            raise ToolError("result is too large to represent") from None
        return self._done("power", value)

    def square_root(self, number: float) -> Result:
        """Square root of a number.

        Args:
            number: A non-negative number.
        """
        require(number >= 0, "square_root needs a non-negative number")
        return self._done("square_root", math.sqrt(number))

    def round_number(self, number: float, decimal_places: int = 0) -> Result:
        """Round a number.

        Args:
            number: The number.
            decimal_places: Digits after the point (0-10).
        """
        require(0 <= decimal_places <= 10, "decimal_places must be between 0 and 10")
        return self._done("round", round(number, decimal_places))

    def mean(self, numbers: list[float]) -> Result:
        """Arithmetic mean of a list of numbers.

        Args:
            numbers: At least one number.
        """
        require(numbers, "numbers must not be empty")
        return self._done("mean", statistics.fmean(numbers))

    def standard_deviation(self, numbers: list[float]) -> Result:
        """Population standard deviation of a list of numbers.

        Args:
            numbers: At least one number.
        """
        require(numbers, "numbers must not be empty")
        return self._done("standard_deviation", statistics.pstdev(numbers))

    def percentage(self, part: float, whole: float) -> Result:
        """What percent part is of whole.

        Args:
            part: The part.
            whole: The whole (not zero).
        """
        require(whole != 0, "whole must not be zero")
        return self._done("percentage", part / whole * 100)

    def compound_interest(self, principal: float, annual_rate_percent: float, years: int, times_per_year: int = 12) -> Result:
        """Final balance of a deposit with compound interest.

        Args:
            principal: Starting amount.
            annual_rate_percent: Yearly interest rate in percent.
            years: Number of years.
            times_per_year: Compounding periods per year.
        """
        require(principal >= 0 and years >= 0 and times_per_year > 0, "principal and years must be >= 0, times_per_year > 0")
        return self._done("compound_interest", principal * (1 + annual_rate_percent / 100 / times_per_year) ** (times_per_year * years))

    def convert_length(self, value: float, from_unit: LengthUnit, to_unit: LengthUnit) -> Result:
        """Convert a length between units.

        Args:
            value: The length.
            from_unit: Unit of value.
            to_unit: Unit wanted.
        """
        return self._done("convert_length", value * _LENGTH_M[from_unit] / _LENGTH_M[to_unit])

    def convert_weight(self, value: float, from_unit: WeightUnit, to_unit: WeightUnit) -> Result:
        """Convert a weight between units.

        Args:
            value: The weight.
            from_unit: Unit of value.
            to_unit: Unit wanted.
        """
        require(value >= 0, "weight must not be negative")
        return self._done("convert_weight", value * _WEIGHT_G[from_unit] / _WEIGHT_G[to_unit])

    def convert_temperature(self, value: float, from_unit: TempUnit, to_unit: TempUnit) -> Result:
        """Convert a temperature between Celsius, Fahrenheit and Kelvin.

        Args:
            value: The temperature.
            from_unit: Scale of value.
            to_unit: Scale wanted.
        """
        kelvin = {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[from_unit]
        require(kelvin >= 0, "temperature below absolute zero")
        out = {"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32, "kelvin": kelvin}[to_unit]
        return self._done("convert_temperature", out)

    def store_result(self, name: str, value: float) -> Stored:
        """Save a value in a named memory slot.

        Args:
            name: Slot name.
            value: Value to keep.
        """
        require(name.strip(), "name must not be empty")
        self.state["memory"][name] = value
        return Stored(name=name, value=value)

    def recall_result(self, name: str) -> Stored:
        """Read a value from a named memory slot.

        Args:
            name: Slot name.
        """
        require(name in self.state["memory"], f"memory slot '{name}' not found")
        return Stored(name=name, value=self.state["memory"][name])
