"""Online shopping: catalogue, cart, coupons, addresses, orders, tracking, returns, reviews.

Chain: search_products -> product_id -> get_product_details / check_stock / add_to_cart ->
view_cart -> cart_total; add_shipping_address -> address_id; apply_coupon -> discount;
checkout(address_id) -> order_id -> track_order -> tracking_number / cancel_order /
return_order -> return_id -> get_return_status; leave_review(product_id).
"""

from __future__ import annotations

import random
from typing import Any, Literal, TypedDict

from graph.toolkit import Toolkit, require

_CATALOG = [
    ("wireless mouse", "electronics", 24.99), ("usb-c charger", "electronics", 19.5), ("noise cancelling headphones", "electronics", 199.0),
    ("running shoes", "sports", 89.9), ("yoga mat", "sports", 29.0), ("water bottle", "sports", 14.5),
    ("coffee grinder", "kitchen", 45.0), ("chef knife", "kitchen", 62.0), ("cast iron pan", "kitchen", 38.75),
    ("desk lamp", "home", 33.0), ("throw blanket", "home", 27.5), ("scented candle", "home", 12.0),
    ("paperback novel", "books", 11.99), ("cookbook", "books", 24.0), ("travel guide", "books", 18.5),
]
Category = Literal["electronics", "sports", "kitchen", "home", "books"]
_COUPONS = {"SAVE10": 0.10, "WELCOME15": 0.15, "SPRING20": 0.20}


class Product(TypedDict):
    """product_id: Id of the product.
    name: Product name.
    category: Catalogue section.
    price: Unit price in USD.
    rating: Average review rating (1-5)."""

    product_id: str
    name: str
    category: str
    price: float
    rating: float


class ProductList(TypedDict):
    """products: Matching products."""

    products: list[Product]


class Stock(TypedDict):
    """product_id: The product.
    in_stock: Units available."""

    product_id: str
    in_stock: int


class Cart(TypedDict):
    """items: Cart lines with product_id, quantity and line_total.
    cart_total: Total in USD after any coupon.
    discount: Coupon discount in USD."""

    items: list[dict[str, Any]]
    cart_total: float
    discount: float


class Address(TypedDict):
    """address_id: Id of the address, used at checkout.
    city: City.
    zip_code: Postal code."""

    address_id: str
    city: str
    zip_code: str


class Order(TypedDict):
    """order_id: Id of the order.
    status: placed, shipped, delivered, cancelled or returned.
    order_total: Amount paid in USD.
    address_id: Where it ships.
    product_ids: Products ordered."""

    order_id: str
    status: str
    order_total: float
    address_id: str
    product_ids: list[str]


class OrderList(TypedDict):
    """orders: The customer's orders, oldest first."""

    orders: list[Order]


class Tracking(TypedDict):
    """order_id: The order.
    tracking_number: Carrier tracking number.
    status: Shipping status.
    estimated_delivery: Expected delivery date YYYY-MM-DD."""

    order_id: str
    tracking_number: str
    status: str
    estimated_delivery: str


class ReturnInfo(TypedDict):
    """return_id: Id of the return.
    order_id: Order returned.
    refund_amount: USD to be refunded.
    status: Return status."""

    return_id: str
    order_id: str
    refund_amount: float
    status: str


class Review(TypedDict):
    """review_id: Id of the review.
    product_id: Product reviewed.
    rating: Stars given."""

    review_id: str
    product_id: str
    rating: int


class ShoppingToolkit(Toolkit):
    name = "shopping"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        products = {f"P{1000 + i}": {"name": n, "category": c, "price": p, "rating": round(rng.uniform(3.0, 5.0), 1),
                                     "stock": rng.randrange(0, 25)} for i, (n, c, p) in enumerate(_CATALOG)}
        return {"products": products, "cart": {}, "coupon": None, "addresses": {}, "orders": {}, "returns": {},
                "reviews": {}, "day": 40}

    def _product(self, product_id: str) -> dict[str, Any]:
        require(product_id in self.state["products"], f"product '{product_id}' not found")
        return self.state["products"][product_id]

    def _order(self, order_id: str) -> dict[str, Any]:
        require(order_id in self.state["orders"], f"order '{order_id}' not found")
        return self.state["orders"][order_id]

    def _cart(self) -> Cart:
        items = [{"product_id": pid, "quantity": q, "line_total": round(self.state["products"][pid]["price"] * q, 2)}
                 for pid, q in self.state["cart"].items()]
        subtotal = sum(i["line_total"] for i in items)
        discount = round(subtotal * _COUPONS.get(self.state["coupon"] or "", 0.0), 2)
        return Cart(items=items, cart_total=round(subtotal - discount, 2), discount=discount)

    def search_products(self, query: str, category: Category | None = None, max_price: float | None = None) -> ProductList:
        """Search the catalogue by words in the product name.

        Args:
            query: Words to look for, e.g. "shoes".
            category: Only this catalogue section.
            max_price: Only products at most this price in USD.
        """
        words = query.lower().split()
        require(words, "query must not be empty")
        found = [Product(product_id=k, name=v["name"], category=v["category"], price=v["price"], rating=v["rating"])
                 for k, v in self.state["products"].items()
                 if any(w in v["name"] for w in words) and (category is None or v["category"] == category)
                 and (max_price is None or v["price"] <= max_price)]
        return ProductList(products=found)

    def get_product_details(self, product_id: str) -> Product:
        """Get a product's name, price and rating.

        Args:
            product_id: Id of the product.
        """
        v = self._product(product_id)
        return Product(product_id=product_id, name=v["name"], category=v["category"], price=v["price"], rating=v["rating"])

    def check_stock(self, product_id: str) -> Stock:
        """Check how many units of a product are available.

        Args:
            product_id: Id of the product.
        """
        return Stock(product_id=product_id, in_stock=self._product(product_id)["stock"])

    def add_to_cart(self, product_id: str, quantity: int = 1) -> Cart:
        """Put units of a product in the cart.

        Args:
            product_id: Id of the product.
            quantity: Units to add.
        """
        product = self._product(product_id)
        require(quantity > 0, "quantity must be positive")
        want = self.state["cart"].get(product_id, 0) + quantity
        require(want <= product["stock"], f"only {product['stock']} units of '{product_id}' in stock")
        self.state["cart"][product_id] = want
        return self._cart()

    def remove_from_cart(self, product_id: str) -> Cart:
        """Take a product out of the cart.

        Args:
            product_id: Id of the product.
        """
        require(product_id in self.state["cart"], f"product '{product_id}' is not in the cart")
        del self.state["cart"][product_id]
        return self._cart()

    def view_cart(self) -> Cart:
        """Show the cart's items and total."""
        return self._cart()

    def apply_coupon(self, coupon_code: str) -> Cart:
        """Apply a discount coupon to the cart.

        Args:
            coupon_code: Code such as SAVE10.
        """
        require(coupon_code.upper() in _COUPONS, f"coupon '{coupon_code}' is invalid or expired")
        require(self.state["cart"], "the cart is empty")
        self.state["coupon"] = coupon_code.upper()
        return self._cart()

    def add_shipping_address(self, street: str, city: str, zip_code: str) -> Address:
        """Save a shipping address.

        Args:
            street: Street and number.
            city: City.
            zip_code: Postal code (5 digits).
        """
        require(zip_code.isdigit() and len(zip_code) == 5, f"invalid zip_code '{zip_code}'; use 5 digits")
        address_id = self.new_id("ADR")
        self.state["addresses"][address_id] = {"street": street, "city": city, "zip_code": zip_code}
        return Address(address_id=address_id, city=city, zip_code=zip_code)

    def checkout(self, address_id: str, payment_method: Literal["card", "paypal", "gift_card"] = "card") -> Order:
        """Place an order for everything in the cart.

        Args:
            address_id: Shipping address from add_shipping_address.
            payment_method: How to pay.
        """
        require(address_id in self.state["addresses"], f"address '{address_id}' not found")
        require(self.state["cart"], "the cart is empty")
        cart = self._cart()
        for pid, q in self.state["cart"].items():
            self.state["products"][pid]["stock"] -= q
        order_id = self.new_id("ORD")
        order = Order(order_id=order_id, status="placed", order_total=cart["cart_total"], address_id=address_id,
                      product_ids=list(self.state["cart"]))
        self.state["orders"][order_id] = {**order, "payment_method": payment_method, "placed_day": self.state["day"]}
        self.state["cart"], self.state["coupon"] = {}, None
        return order

    def list_orders(self) -> OrderList:
        """List the customer's orders."""
        return OrderList(orders=[Order(order_id=k, status=v["status"], order_total=v["order_total"],
                                       address_id=v["address_id"], product_ids=v["product_ids"])
                                 for k, v in self.state["orders"].items()])

    def track_order(self, order_id: str) -> Tracking:
        """Get the shipping status of an order.

        Args:
            order_id: Id of the order.
        """
        order = self._order(order_id)
        require(order["status"] != "cancelled", f"order '{order_id}' was cancelled")
        days = 3 + self.stable_rng("ship", order_id).randrange(4)
        return Tracking(order_id=order_id, tracking_number=f"1Z{order_id[-6:]}{days}", status=order["status"],
                        estimated_delivery=f"2025-03-{min(28, 10 + days):02d}")

    def cancel_order(self, order_id: str) -> Order:
        """Cancel an order that has not shipped.

        Args:
            order_id: Id of the order.
        """
        order = self._order(order_id)
        require(order["status"] == "placed", f"order '{order_id}' is {order['status']} and cannot be cancelled")
        order["status"] = "cancelled"
        for pid in order["product_ids"]:
            self.state["products"][pid]["stock"] += 1
        return Order(order_id=order_id, status="cancelled", order_total=order["order_total"],
                     address_id=order["address_id"], product_ids=order["product_ids"])

    def return_order(self, order_id: str, reason: str) -> ReturnInfo:
        """Start a return for an order and get a refund.

        Args:
            order_id: Id of the order.
            reason: Why it is returned.
        """
        order = self._order(order_id)
        require(order["status"] in ("placed", "shipped", "delivered"), f"order '{order_id}' is {order['status']}")
        require(reason.strip(), "reason must not be empty")
        order["status"] = "returned"
        return_id = self.new_id("RET")
        self.state["returns"][return_id] = {"order_id": order_id, "reason": reason, "refund": order["order_total"]}
        return ReturnInfo(return_id=return_id, order_id=order_id, refund_amount=order["order_total"], status="requested")

    def get_return_status(self, return_id: str) -> ReturnInfo:
        """Check a return's status.

        Args:
            return_id: Id from return_order.
        """
        require(return_id in self.state["returns"], f"return '{return_id}' not found")
        r = self.state["returns"][return_id]
        return ReturnInfo(return_id=return_id, order_id=r["order_id"], refund_amount=r["refund"], status="refund_issued")

    def leave_review(self, product_id: str, rating: int, text: str = "") -> Review:
        """Review a product you ordered.

        Args:
            product_id: Id of the product.
            rating: Stars from 1 to 5.
            text: Optional comment.
        """
        self._product(product_id)
        require(1 <= rating <= 5, "rating must be between 1 and 5")
        require(any(product_id in o["product_ids"] for o in self.state["orders"].values()),
                f"product '{product_id}' was never ordered; only buyers can review")
        review_id = self.new_id("REV")
        self.state["reviews"][review_id] = {"product_id": product_id, "rating": rating, "text": text}
        return Review(review_id=review_id, product_id=product_id, rating=rating)
