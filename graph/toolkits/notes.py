"""Notes: notebooks, notes, tags, search, pinning and sharing.

Chain: create_notebook -> notebook_id -> create_note(notebook_id) -> note_id -> get_note /
update_note / append_to_note / add_tag / pin_note / move_note / share_note -> share_link /
delete_note; search_notes / list_notes -> note_id.
"""

from __future__ import annotations

import random
from typing import Any, TypedDict

from graph.toolkit import Toolkit, require

_SEED_NOTES = [("Groceries", "milk, eggs, coffee", ["home"]), ("Trip ideas", "Paris in spring; Tokyo in fall", ["travel"]),
               ("Meeting 3/12", "budget approved; hire two engineers", ["work"]), ("Books", "Dune; Piranesi", ["reading"]),
               ("Workout", "run 5k Monday, yoga Wednesday", ["health"])]


class Note(TypedDict):
    """note_id: Id of the note.
    title: Title.
    content: Body text.
    tags: Tags.
    notebook_id: Notebook holding it.
    pinned: Whether it is pinned."""

    note_id: str
    title: str
    content: str
    tags: list[str]
    notebook_id: str
    pinned: bool


class NoteList(TypedDict):
    """notes: Matching notes (pinned first).
    count: How many."""

    notes: list[Note]
    count: int


class Notebook(TypedDict):
    """notebook_id: Id of the notebook.
    name: Notebook name.
    note_count: Notes it holds."""

    notebook_id: str
    name: str
    note_count: int


class NotebookList(TypedDict):
    """notebooks: All notebooks."""

    notebooks: list[Notebook]


class Share(TypedDict):
    """note_id: The note shared.
    share_link: Link that opens the note.
    shared_with: Who can open it."""

    note_id: str
    share_link: str
    shared_with: list[str]


class Deleted(TypedDict):
    """note_id: The note removed.
    deleted: Always true."""

    note_id: str
    deleted: bool


class NotesToolkit(Toolkit):
    name = "notes"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        notes = {}
        for i, (title, content, tags) in enumerate(rng.sample(_SEED_NOTES, 4)):
            notes[f"NT-{i + 1:04d}"] = {"title": title, "content": content, "tags": list(tags),
                                        "notebook_id": "NB-DEFAULT", "pinned": False, "shared_with": []}
        return {"notebooks": {"NB-DEFAULT": "My Notes"}, "notes": notes}

    def _note(self, note_id: str) -> dict[str, Any]:
        require(note_id in self.state["notes"], f"note '{note_id}' not found")
        return self.state["notes"][note_id]

    def _view(self, note_id: str) -> Note:
        n = self._note(note_id)
        return Note(note_id=note_id, title=n["title"], content=n["content"], tags=list(n["tags"]),
                    notebook_id=n["notebook_id"], pinned=n["pinned"])

    def _select(self, pred: Any) -> NoteList:
        ids = sorted((not n["pinned"], k) for k, n in self.state["notes"].items() if pred(n))
        notes = [self._view(k) for _p, k in ids]
        return NoteList(notes=notes, count=len(notes))

    def create_notebook(self, name: str) -> Notebook:
        """Create a notebook to group notes.

        Args:
            name: Notebook name.
        """
        require(name.strip(), "name must not be empty")
        require(name not in self.state["notebooks"].values(), f"notebook '{name}' already exists")
        notebook_id = self.new_id("NB")
        self.state["notebooks"][notebook_id] = name
        return Notebook(notebook_id=notebook_id, name=name, note_count=0)

    def list_notebooks(self) -> NotebookList:
        """List all notebooks with their note counts."""
        count = {k: sum(n["notebook_id"] == k for n in self.state["notes"].values()) for k in self.state["notebooks"]}
        return NotebookList(notebooks=[Notebook(notebook_id=k, name=v, note_count=count[k])
                                       for k, v in self.state["notebooks"].items()])

    def create_note(self, title: str, content: str, tags: list[str] | None = None, notebook_id: str = "NB-DEFAULT") -> Note:
        """Write a new note.

        Args:
            title: Title.
            content: Body text.
            tags: Tags to attach.
            notebook_id: Notebook to put it in.
        """
        require(title.strip(), "title must not be empty")
        require(notebook_id in self.state["notebooks"], f"notebook '{notebook_id}' not found")
        note_id = self.new_id("NT")
        self.state["notes"][note_id] = {"title": title, "content": content, "tags": sorted(set(tags or [])),
                                        "notebook_id": notebook_id, "pinned": False, "shared_with": []}
        return self._view(note_id)

    def get_note(self, note_id: str) -> Note:
        """Read a note.

        Args:
            note_id: Id of the note.
        """
        return self._view(note_id)

    def list_notes(self, notebook_id: str | None = None, tag: str | None = None) -> NoteList:
        """List notes, optionally of one notebook or with one tag.

        Args:
            notebook_id: Only notes in this notebook.
            tag: Only notes with this tag.
        """
        require(notebook_id is None or notebook_id in self.state["notebooks"], f"notebook '{notebook_id}' not found")
        return self._select(lambda n: (notebook_id is None or n["notebook_id"] == notebook_id)
                            and (tag is None or tag in n["tags"]))

    def search_notes(self, keyword: str) -> NoteList:
        """Find notes whose title or body contains a keyword (case-insensitive).

        Args:
            keyword: Word or phrase.
        """
        require(keyword.strip(), "keyword must not be empty")
        k = keyword.lower()
        return self._select(lambda n: k in n["title"].lower() or k in n["content"].lower())

    def update_note(self, note_id: str, content: str) -> Note:
        """Replace a note's body.

        Args:
            note_id: Id of the note.
            content: New body text.
        """
        self._note(note_id)["content"] = content
        return self._view(note_id)

    def append_to_note(self, note_id: str, text: str) -> Note:
        """Add a line to the end of a note.

        Args:
            note_id: Id of the note.
            text: Line to add.
        """
        n = self._note(note_id)
        n["content"] = f"{n['content']}\n{text}" if n["content"] else text
        return self._view(note_id)

    def add_tag(self, note_id: str, tag: str) -> Note:
        """Tag a note.

        Args:
            note_id: Id of the note.
            tag: Tag to add.
        """
        n = self._note(note_id)
        require(tag.strip(), "tag must not be empty")
        require(tag not in n["tags"], f"note '{note_id}' already has tag '{tag}'")
        n["tags"] = sorted([*n["tags"], tag])
        return self._view(note_id)

    def remove_tag(self, note_id: str, tag: str) -> Note:
        """Remove a tag from a note.

        Args:
            note_id: Id of the note.
            tag: Tag to remove.
        """
        n = self._note(note_id)
        require(tag in n["tags"], f"note '{note_id}' has no tag '{tag}'")
        n["tags"].remove(tag)
        return self._view(note_id)

    def pin_note(self, note_id: str, pinned: bool = True) -> Note:
        """Pin a note to the top of lists, or unpin it.

        Args:
            note_id: Id of the note.
            pinned: True to pin, false to unpin.
        """
        self._note(note_id)["pinned"] = pinned
        return self._view(note_id)

    def move_note(self, note_id: str, notebook_id: str) -> Note:
        """Move a note to another notebook.

        Args:
            note_id: Id of the note.
            notebook_id: Target notebook.
        """
        n = self._note(note_id)
        require(notebook_id in self.state["notebooks"], f"notebook '{notebook_id}' not found")
        n["notebook_id"] = notebook_id
        return self._view(note_id)

    def share_note(self, note_id: str, email: str) -> Share:
        """Share a note with someone by e-mail.

        Args:
            note_id: Id of the note.
            email: Address to share with.
        """
        n = self._note(note_id)
        require("@" in email, f"invalid email '{email}'")
        if email not in n["shared_with"]:
            n["shared_with"].append(email)
        return Share(note_id=note_id, share_link=f"https://notes.example.com/s/{note_id.lower()}",
                     shared_with=list(n["shared_with"]))

    def delete_note(self, note_id: str) -> Deleted:
        """Delete a note.

        Args:
            note_id: Id of the note.
        """
        self._note(note_id)
        del self.state["notes"][note_id]
        return Deleted(note_id=note_id, deleted=True)
