"""Banking and payments: accounts, balances, transfers, payees, bills, exchange rates.

Chain: bank_login -> auth_token; list_accounts / open_account -> account_id ->
get_balance / deposit / withdraw / transfer(from_account_id, to_account_id) ->
transaction_id -> get_transaction; add_payee -> payee_id -> pay_bill;
get_exchange_rate -> rate; convert_currency -> converted_amount -> transfer(amount).
"""

from __future__ import annotations

import random
from typing import Any, Literal, TypedDict

from graph.toolkit import ToolError, Toolkit, require

Currency = Literal["USD", "EUR", "GBP", "JPY", "CAD", "CNY"]
_USD_PER = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "CAD": 0.73, "CNY": 0.14}


class Auth(TypedDict):
    """auth_token: Token for account operations.
    customer_id: The customer logged in."""

    auth_token: str
    customer_id: str


class Account(TypedDict):
    """account_id: Id of the account.
    account_type: checking or savings.
    currency: Currency of the account.
    balance: Current balance in the account's currency."""

    account_id: str
    account_type: str
    currency: str
    balance: float


class AccountList(TypedDict):
    """accounts: The customer's accounts."""

    accounts: list[Account]


class Transaction(TypedDict):
    """transaction_id: Id of the transaction.
    account_id: Account debited or credited.
    kind: deposit, withdrawal, transfer or bill.
    amount: Amount in the account's currency.
    balance: Account balance after it.
    counterparty: Other account or payee, if any."""

    transaction_id: str
    account_id: str
    kind: str
    amount: float
    balance: float
    counterparty: str


class TransactionList(TypedDict):
    """transactions: Most recent first."""

    transactions: list[Transaction]


class Rate(TypedDict):
    """from_currency: Source currency.
    to_currency: Target currency.
    rate: Units of to_currency per unit of from_currency."""

    from_currency: str
    to_currency: str
    rate: float


class Conversion(TypedDict):
    """converted_amount: The amount in to_currency.
    to_currency: Target currency.
    rate: Rate used."""

    converted_amount: float
    to_currency: str
    rate: float


class Payee(TypedDict):
    """payee_id: Id of the payee, used to pay bills.
    name: Payee name.
    iban: Payee account number."""

    payee_id: str
    name: str
    iban: str


class Statement(TypedDict):
    """account_id: The account.
    month: YYYY-MM.
    opening_balance: Balance before the month's transactions.
    closing_balance: Balance now.
    transaction_count: Transactions listed."""

    account_id: str
    month: str
    opening_balance: float
    closing_balance: float
    transaction_count: int


class BankingToolkit(Toolkit):
    name = "banking"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        # Drawn in the order id, balance per account (a dict display evaluates each key before its value).
        accounts = {
            f"ACC-{rng.randrange(10**6):06d}": {"account_type": kind, "currency": currency, "balance": float(rng.randrange(low, high))}
            for kind, currency, low, high in (("checking", "USD", 500, 6000), ("savings", "USD", 1000, 20000), ("checking", "EUR", 100, 3000))
        }
        return {"customer_id": "CUST-2048", "pin": "4321", "tokens": [], "accounts": accounts,
                "transactions": [], "payees": {}, "month": "2025-03",
                "rate_jitter": {c: round(rng.uniform(-0.01, 0.01), 4) for c in _USD_PER}}

    def _auth(self, auth_token: str) -> None:
        require(auth_token in self.state["tokens"], "invalid auth_token; call bank_login first")

    def _account(self, account_id: str) -> dict[str, Any]:
        require(account_id in self.state["accounts"], f"account '{account_id}' not found")
        return self.state["accounts"][account_id]

    def _rate(self, src: str, dst: str) -> float:
        usd = {c: v * (1 + self.state["rate_jitter"].get(c, 0.0)) for c, v in _USD_PER.items()}
        return round(usd[src] / usd[dst], 6)

    def _post(self, account_id: str, kind: str, amount: float, counterparty: str = "") -> Transaction:
        acc = self._account(account_id)
        require(acc["balance"] + amount >= 0, f"insufficient funds in account '{account_id}': balance {acc['balance']}")
        acc["balance"] = round(acc["balance"] + amount, 2)
        tx = Transaction(transaction_id=self.new_id("TX"), account_id=account_id, kind=kind, amount=round(amount, 2),
                         balance=acc["balance"], counterparty=counterparty)
        self.state["transactions"].append(dict(tx))
        return tx

    def bank_login(self, customer_id: str, pin: str) -> Auth:
        """Log in to online banking.

        Args:
            customer_id: Customer number, e.g. CUST-2048.
            pin: Four-digit PIN.
        """
        require(customer_id == self.state["customer_id"] and pin == self.state["pin"], "login failed: wrong customer_id or pin")
        token = self.new_id("AUTH")
        self.state["tokens"].append(token)
        return Auth(auth_token=token, customer_id=customer_id)

    def list_accounts(self, auth_token: str) -> AccountList:
        """List the customer's bank accounts with balances.

        Args:
            auth_token: Token from bank_login.
        """
        self._auth(auth_token)
        return AccountList(accounts=[Account(account_id=k, **v) for k, v in self.state["accounts"].items()])

    def get_balance(self, auth_token: str, account_id: str) -> Account:
        """Get the balance of one account.

        Args:
            auth_token: Token from bank_login.
            account_id: Id of the account.
        """
        self._auth(auth_token)
        return Account(account_id=account_id, **self._account(account_id))

    def open_account(self, auth_token: str, account_type: Literal["checking", "savings"], currency: Currency = "USD") -> Account:
        """Open a new, empty account.

        Args:
            auth_token: Token from bank_login.
            account_type: Kind of account.
            currency: Currency the account holds.
        """
        self._auth(auth_token)
        account_id = self.new_id("ACC")
        self.state["accounts"][account_id] = {"account_type": account_type, "currency": currency, "balance": 0.0}
        return Account(account_id=account_id, account_type=account_type, currency=currency, balance=0.0)

    def deposit(self, auth_token: str, account_id: str, amount: float) -> Transaction:
        """Deposit money into an account.

        Args:
            auth_token: Token from bank_login.
            account_id: Account to credit.
            amount: Amount in the account's currency.
        """
        self._auth(auth_token)
        require(amount > 0, "amount must be positive")
        return self._post(account_id, "deposit", amount)

    def withdraw(self, auth_token: str, account_id: str, amount: float) -> Transaction:
        """Withdraw money from an account.

        Args:
            auth_token: Token from bank_login.
            account_id: Account to debit.
            amount: Amount in the account's currency.
        """
        self._auth(auth_token)
        require(amount > 0, "amount must be positive")
        return self._post(account_id, "withdrawal", -amount)

    def transfer(self, auth_token: str, from_account_id: str, to_account_id: str, amount: float) -> Transaction:
        """Move money between accounts; converts when their currencies differ.

        Args:
            auth_token: Token from bank_login.
            from_account_id: Account to debit.
            to_account_id: Account to credit.
            amount: Amount in the source account's currency.
        """
        self._auth(auth_token)
        require(amount > 0, "amount must be positive")
        require(from_account_id != to_account_id, "from_account_id and to_account_id must differ")
        src, dst = self._account(from_account_id), self._account(to_account_id)
        out = self._post(from_account_id, "transfer", -amount, to_account_id)
        self._post(to_account_id, "transfer", amount * self._rate(src["currency"], dst["currency"]), from_account_id)
        return out

    def list_transactions(self, auth_token: str, account_id: str, limit: int = 10) -> TransactionList:
        """List recent transactions of an account.

        Args:
            auth_token: Token from bank_login.
            account_id: The account.
            limit: At most this many.
        """
        self._auth(auth_token)
        self._account(account_id)
        require(limit > 0, "limit must be positive")
        txs = [Transaction(**t) for t in reversed(self.state["transactions"]) if t["account_id"] == account_id]
        return TransactionList(transactions=txs[:limit])

    def get_transaction(self, auth_token: str, transaction_id: str) -> Transaction:
        """Get one transaction.

        Args:
            auth_token: Token from bank_login.
            transaction_id: Id of the transaction.
        """
        self._auth(auth_token)
        for t in self.state["transactions"]:
            if t["transaction_id"] == transaction_id:
                return Transaction(**t)
        raise ToolError(f"transaction '{transaction_id}' not found")

    def get_exchange_rate(self, from_currency: Currency, to_currency: Currency) -> Rate:
        """Get today's exchange rate between two currencies.

        Args:
            from_currency: Source currency code.
            to_currency: Target currency code.
        """
        return Rate(from_currency=from_currency, to_currency=to_currency, rate=self._rate(from_currency, to_currency))

    def convert_currency(self, amount: float, from_currency: Currency, to_currency: Currency) -> Conversion:
        """Convert an amount between currencies at today's rate.

        Args:
            amount: Amount in from_currency.
            from_currency: Source currency code.
            to_currency: Target currency code.
        """
        require(amount >= 0, "amount must not be negative")
        rate = self._rate(from_currency, to_currency)
        return Conversion(converted_amount=round(amount * rate, 2), to_currency=to_currency, rate=rate)

    def add_payee(self, auth_token: str, name: str, iban: str) -> Payee:
        """Register a payee for bill payments.

        Args:
            auth_token: Token from bank_login.
            name: Payee name, e.g. "City Power".
            iban: Payee's account number (IBAN, 15-34 letters and digits).
        """
        self._auth(auth_token)
        compact = iban.replace(" ", "").upper()
        require(compact.isalnum() and 15 <= len(compact) <= 34 and compact[:2].isalpha(), f"invalid iban '{iban}'")
        payee_id = self.new_id("PAY")
        self.state["payees"][payee_id] = {"name": name, "iban": compact}
        return Payee(payee_id=payee_id, name=name, iban=compact)

    def pay_bill(self, auth_token: str, account_id: str, payee_id: str, amount: float) -> Transaction:
        """Pay a registered payee from an account.

        Args:
            auth_token: Token from bank_login.
            account_id: Account to debit.
            payee_id: Payee from add_payee.
            amount: Amount in the account's currency.
        """
        self._auth(auth_token)
        require(payee_id in self.state["payees"], f"payee '{payee_id}' not found")
        require(amount > 0, "amount must be positive")
        return self._post(account_id, "bill", -amount, payee_id)

    def get_statement(self, auth_token: str, account_id: str) -> Statement:
        """Get this month's statement of an account.

        Args:
            auth_token: Token from bank_login.
            account_id: The account.
        """
        self._auth(auth_token)
        acc = self._account(account_id)
        txs = [t for t in self.state["transactions"] if t["account_id"] == account_id]
        return Statement(account_id=account_id, month=self.state["month"],
                         opening_balance=round(acc["balance"] - sum(t["amount"] for t in txs), 2),
                         closing_balance=acc["balance"], transaction_count=len(txs))
