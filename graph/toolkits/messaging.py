"""Messaging: log in, find people, send, read, search and delete messages.

Chain: messaging_login -> session_token (needed by everything that touches a mailbox);
get_user_id / list_contacts / add_contact -> user_id -> send_message(receiver_id) ->
message_id -> read_message / delete_message / star_message; view_inbox / search_messages ->
message_id.
"""

from __future__ import annotations

import random
from typing import Any, TypedDict

from graph.toolkit import ToolError, Toolkit, require

_PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
_TOPICS = ["lunch tomorrow?", "the budget report is ready", "flight moved to 9am", "call me back",
           "invoice attached", "meeting notes", "happy birthday!", "see you at the gym"]


class Session(TypedDict):
    """session_token: Token for mailbox operations.
    user_id: Id of the logged-in user."""

    session_token: str
    user_id: str


class UserRef(TypedDict):
    """user_id: Id of the user, used as receiver_id when sending.
    username: The user's handle."""

    user_id: str
    username: str


class ContactList(TypedDict):
    """contacts: The user's contacts."""

    contacts: list[UserRef]


class Message(TypedDict):
    """message_id: Id of the message.
    sender_id: Id of the sender.
    receiver_id: Id of the receiver.
    message: The text.
    starred: Whether it is starred."""

    message_id: str
    sender_id: str
    receiver_id: str
    message: str
    starred: bool


class MessageList(TypedDict):
    """messages: Messages, oldest first.
    count: How many."""

    messages: list[Message]
    count: int


class Sent(TypedDict):
    """message_id: Id of the new message.
    receiver_id: Who it went to.
    sent_status: Always "sent"."""

    message_id: str
    receiver_id: str
    sent_status: str


class Status(TypedDict):
    """success: Whether the action took effect.
    detail: What happened."""

    success: bool
    detail: str


class Stats(TypedDict):
    """received_count: Messages received.
    sent_count: Messages sent.
    contact_count: Contacts."""

    received_count: int
    sent_count: int
    contact_count: int


class MessagingToolkit(Toolkit):
    name = "messaging"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        users = {f"USR-{i + 101}": name for i, name in enumerate(_PEOPLE)}
        me = "USR-101"
        messages = {}
        for n in range(6):
            other = rng.choice([u for u in users if u != me])
            sender, receiver = (other, me) if rng.random() < 0.7 else (me, other)
            messages[f"MSG-{n + 1:04d}"] = {"sender_id": sender, "receiver_id": receiver,
                                            "message": rng.choice(_TOPICS), "starred": False}
        return {"users": users, "passwords": {name: f"{name}-pass" for name in _PEOPLE}, "me": me,
                "contacts": sorted(rng.sample([u for u in users if u != me], 3)), "blocked": [],
                "sessions": {}, "messages": messages}

    def _me(self, session_token: str) -> str:
        require(session_token in self.state["sessions"], "invalid session_token; call messaging_login first")
        return self.state["sessions"][session_token]

    def _user(self, user_id: str) -> str:
        require(user_id in self.state["users"], f"user '{user_id}' not found")
        return self.state["users"][user_id]

    def _msg(self, me: str, message_id: str) -> dict[str, Any]:
        msg = self.state["messages"].get(message_id)
        require(msg is not None and me in (msg["sender_id"], msg["receiver_id"]), f"message '{message_id}' not found")
        return msg

    def _list(self, me: str, pred: Any) -> MessageList:
        msgs = [Message(message_id=k, **v) for k, v in self.state["messages"].items()
                if me in (v["sender_id"], v["receiver_id"]) and pred(v)]
        return MessageList(messages=msgs, count=len(msgs))

    def messaging_login(self, username: str, password: str) -> Session:
        """Log in to the messaging service.

        Args:
            username: The user's handle, e.g. "alice".
            password: The user's password.
        """
        require(self.state["passwords"].get(username) == password, "login failed: wrong username or password")
        user_id = next(k for k, v in self.state["users"].items() if v == username)
        token = self.new_id("SES")
        self.state["sessions"][token] = user_id
        return Session(session_token=token, user_id=user_id)

    def messaging_logout(self, session_token: str) -> Status:
        """End a messaging session.

        Args:
            session_token: Token from messaging_login.
        """
        self._me(session_token)
        del self.state["sessions"][session_token]
        return Status(success=True, detail="logged out")

    def get_user_id(self, username: str) -> UserRef:
        """Look up a user's id by handle.

        Args:
            username: The user's handle, e.g. "bob".
        """
        for user_id, name in self.state["users"].items():
            if name == username.strip().lower():
                return UserRef(user_id=user_id, username=name)
        raise ToolError(f"user '{username}' not found")

    def list_contacts(self, session_token: str) -> ContactList:
        """List the logged-in user's contacts.

        Args:
            session_token: Token from messaging_login.
        """
        self._me(session_token)
        return ContactList(contacts=[UserRef(user_id=u, username=self.state["users"][u]) for u in self.state["contacts"]])

    def add_contact(self, session_token: str, user_id: str) -> UserRef:
        """Add a user to the contacts.

        Args:
            session_token: Token from messaging_login.
            user_id: Id of the user to add.
        """
        me = self._me(session_token)
        name = self._user(user_id)
        require(user_id != me, "cannot add yourself as a contact")
        require(user_id not in self.state["contacts"], f"user '{user_id}' is already a contact")
        self.state["contacts"].append(user_id)
        return UserRef(user_id=user_id, username=name)

    def block_user(self, session_token: str, user_id: str) -> Status:
        """Block a user: their new messages are refused.

        Args:
            session_token: Token from messaging_login.
            user_id: Id of the user to block.
        """
        self._me(session_token)
        self._user(user_id)
        require(user_id not in self.state["blocked"], f"user '{user_id}' is already blocked")
        self.state["blocked"].append(user_id)
        return Status(success=True, detail=f"blocked {user_id}")

    def send_message(self, session_token: str, receiver_id: str, message: str) -> Sent:
        """Send a message to a user.

        Args:
            session_token: Token from messaging_login.
            receiver_id: User id of the receiver.
            message: The text to send.
        """
        me = self._me(session_token)
        self._user(receiver_id)
        require(receiver_id not in self.state["blocked"], f"user '{receiver_id}' is blocked")
        require(message.strip(), "message must not be empty")
        message_id = self.new_id("MSG")
        self.state["messages"][message_id] = {"sender_id": me, "receiver_id": receiver_id, "message": message,
                                               "starred": False}
        return Sent(message_id=message_id, receiver_id=receiver_id, sent_status="sent")

    def view_inbox(self, session_token: str) -> MessageList:
        """List the messages received by the logged-in user.

        Args:
            session_token: Token from messaging_login.
        """
        me = self._me(session_token)
        return self._list(me, lambda m: m["receiver_id"] == me)

    def view_sent_messages(self, session_token: str) -> MessageList:
        """List the messages the logged-in user sent.

        Args:
            session_token: Token from messaging_login.
        """
        me = self._me(session_token)
        return self._list(me, lambda m: m["sender_id"] == me)

    def read_message(self, session_token: str, message_id: str) -> Message:
        """Read one message.

        Args:
            session_token: Token from messaging_login.
            message_id: Id of the message.
        """
        me = self._me(session_token)
        return Message(message_id=message_id, **self._msg(me, message_id))

    def search_messages(self, session_token: str, keyword: str) -> MessageList:
        """Find the user's messages containing a keyword (case-insensitive).

        Args:
            session_token: Token from messaging_login.
            keyword: Word or phrase to look for.
        """
        me = self._me(session_token)
        require(keyword.strip(), "keyword must not be empty")
        return self._list(me, lambda m: keyword.lower() in m["message"].lower())

    def star_message(self, session_token: str, message_id: str) -> Message:
        """Mark a message as starred.

        Args:
            session_token: Token from messaging_login.
            message_id: Id of the message.
        """
        me = self._me(session_token)
        msg = self._msg(me, message_id)
        msg["starred"] = True
        return Message(message_id=message_id, **msg)

    def delete_message(self, session_token: str, message_id: str) -> Status:
        """Delete a message.

        Args:
            session_token: Token from messaging_login.
            message_id: Id of the message.
        """
        me = self._me(session_token)
        self._msg(me, message_id)
        del self.state["messages"][message_id]
        return Status(success=True, detail=f"deleted {message_id}")

    def get_message_stats(self, session_token: str) -> Stats:
        """Count the user's received and sent messages and contacts.

        Args:
            session_token: Token from messaging_login.
        """
        me = self._me(session_token)
        msgs = self.state["messages"].values()
        return Stats(received_count=sum(m["receiver_id"] == me for m in msgs),
                     sent_count=sum(m["sender_id"] == me for m in msgs), contact_count=len(self.state["contacts"]))
