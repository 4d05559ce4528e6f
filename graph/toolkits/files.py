"""A small in-memory file system: a shell-like toolkit over folders and text files.

Chain: ls / find -> file_name -> cat / grep / wc / sort_file / tail / diff / cp / mv / rm;
mkdir -> path -> cd -> current_directory; write_file -> path -> cat.
"""

from __future__ import annotations

import difflib
import fnmatch
import posixpath
import random
from typing import Any, Literal, TypedDict

from graph.toolkit import Toolkit, require

_WORDS = ["alpha", "budget", "report", "meeting", "travel", "invoice", "draft", "summary", "todo", "notes"]


class Directory(TypedDict):
    """current_directory: Absolute path of the working folder."""

    current_directory: str


class Listing(TypedDict):
    """path: Folder listed.
    file_names: Files in the folder.
    directories: Sub-folders in the folder."""

    path: str
    file_names: list[str]
    directories: list[str]


class PathResult(TypedDict):
    """path: Absolute path of the file or folder created or changed."""

    path: str


class FileWritten(TypedDict):
    """path: Absolute path of the file.
    size: Size in characters after writing."""

    path: str
    size: int


class FileContent(TypedDict):
    """file_name: The file read.
    content: Its text."""

    file_name: str
    content: str


class Lines(TypedDict):
    """file_name: The file searched.
    lines: The selected lines.
    count: Number of lines selected."""

    file_name: str
    lines: list[str]
    count: int


class Count(TypedDict):
    """file_name: The file counted.
    mode: What was counted.
    count: The number."""

    file_name: str
    mode: str
    count: int


class Matches(TypedDict):
    """matches: Paths of matching files and folders, relative to the search root."""

    matches: list[str]


class Diff(TypedDict):
    """identical: Whether the files are the same.
    diff_lines: Unified diff lines."""

    identical: bool
    diff_lines: list[str]


class DiskUsage(TypedDict):
    """path: Folder measured.
    size_bytes: Total size of the files below it."""

    path: str
    size_bytes: int


class FilesToolkit(Toolkit):
    name = "files"

    def default_state(self, rng: random.Random) -> dict[str, Any]:
        files = {}
        for folder in ("/home/user/documents", "/home/user/projects"):
            for word in rng.sample(_WORDS, 3):
                body = [f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.randrange(100)}" for _ in range(rng.randrange(3, 7))]
                files[f"{folder}/{word}.txt"] = "\n".join(body)
        files["/home/user/readme.md"] = "Welcome home.\nSee documents/ and projects/."
        return {"cwd": "/home/user", "dirs": ["/", "/home", "/home/user", "/home/user/documents",
                                              "/home/user/projects"], "files": files}

    def _abs(self, path: str) -> str:
        require(path.strip(), "path must not be empty")
        return posixpath.normpath(posixpath.join(self.state["cwd"], path.strip()))

    def _file(self, name: str) -> str:
        path = self._abs(name)
        require(path in self.state["files"], f"no such file: '{name}'")
        return path

    def _dir(self, name: str) -> str:
        path = self._abs(name)
        require(path in self.state["dirs"], f"no such directory: '{name}'")
        return path

    def _free(self, path: str) -> None:
        require(path not in self.state["files"] and path not in self.state["dirs"], f"'{path}' already exists")
        require(posixpath.dirname(path) in self.state["dirs"], f"parent folder of '{path}' does not exist")

    def pwd(self) -> Directory:
        """Show the current working directory."""
        return Directory(current_directory=self.state["cwd"])

    def ls(self, path: str = ".", show_hidden: bool = False) -> Listing:
        """List the files and folders in a folder.

        Args:
            path: Folder to list, absolute or relative to the current directory.
            show_hidden: Include names starting with a dot.
        """
        folder = self._dir(path)
        def keep(p: str) -> bool:
            return posixpath.dirname(p) == folder and p != folder and (show_hidden or not posixpath.basename(p).startswith("."))
        return Listing(path=folder,
                       file_names=sorted(posixpath.basename(p) for p in self.state["files"] if keep(p)),
                       directories=sorted(posixpath.basename(p) for p in self.state["dirs"] if keep(p)))

    def cd(self, folder: str) -> Directory:
        """Change the current working directory.

        Args:
            folder: Folder to enter, absolute or relative ("..", "documents").
        """
        self.state["cwd"] = self._dir(folder)
        return Directory(current_directory=self.state["cwd"])

    def mkdir(self, dir_name: str) -> PathResult:
        """Create a folder.

        Args:
            dir_name: Name or path of the new folder.
        """
        path = self._abs(dir_name)
        self._free(path)
        self.state["dirs"].append(path)
        return PathResult(path=path)

    def touch(self, file_name: str) -> PathResult:
        """Create an empty file.

        Args:
            file_name: Name or path of the new file.
        """
        path = self._abs(file_name)
        self._free(path)
        self.state["files"][path] = ""
        return PathResult(path=path)

    def write_file(self, file_name: str, content: str, append: bool = False) -> FileWritten:
        """Write text to a file, creating it when missing.

        Args:
            file_name: Name or path of the file.
            content: Text to write.
            append: Add to the end instead of replacing the content.
        """
        path = self._abs(file_name)
        require(path not in self.state["dirs"], f"'{file_name}' is a directory")
        if path not in self.state["files"]:
            self._free(path)
        old = self.state["files"].get(path, "")
        new = (old + ("\n" if old else "") + content) if append else content
        self.state["files"][path] = new
        return FileWritten(path=path, size=len(new))

    def cat(self, file_name: str) -> FileContent:
        """Read a file.

        Args:
            file_name: Name or path of the file.
        """
        return FileContent(file_name=file_name, content=self.state["files"][self._file(file_name)])

    def grep(self, file_name: str, pattern: str) -> Lines:
        """Find the lines of a file that contain a text.

        Args:
            file_name: Name or path of the file.
            pattern: Text to look for (case-sensitive, no regex).
        """
        lines = [ln for ln in self.state["files"][self._file(file_name)].splitlines() if pattern in ln]
        return Lines(file_name=file_name, lines=lines, count=len(lines))

    def tail(self, file_name: str, lines: int = 10) -> Lines:
        """Show the last lines of a file.

        Args:
            file_name: Name or path of the file.
            lines: How many lines.
        """
        require(lines > 0, "lines must be positive")
        last = self.state["files"][self._file(file_name)].splitlines()[-lines:]
        return Lines(file_name=file_name, lines=last, count=len(last))

    def sort_file(self, file_name: str, reverse: bool = False) -> Lines:
        """Return the lines of a file in alphabetical order.

        Args:
            file_name: Name or path of the file.
            reverse: Sort descending.
        """
        lines = sorted(self.state["files"][self._file(file_name)].splitlines(), reverse=reverse)
        return Lines(file_name=file_name, lines=lines, count=len(lines))

    def wc(self, file_name: str, mode: Literal["lines", "words", "characters"] = "lines") -> Count:
        """Count lines, words or characters of a file.

        Args:
            file_name: Name or path of the file.
            mode: What to count.
        """
        text = self.state["files"][self._file(file_name)]
        n = len(text.splitlines()) if mode == "lines" else len(text.split()) if mode == "words" else len(text)
        return Count(file_name=file_name, mode=mode, count=n)

    def mv(self, source: str, destination: str) -> PathResult:
        """Move or rename a file.

        Args:
            source: File to move.
            destination: New name, or an existing folder to move it into.
        """
        src = self._file(source)
        dst = self._abs(destination)
        if dst in self.state["dirs"]:
            dst = posixpath.join(dst, posixpath.basename(src))
        self._free(dst)
        self.state["files"][dst] = self.state["files"].pop(src)
        return PathResult(path=dst)

    def cp(self, source: str, destination: str) -> PathResult:
        """Copy a file.

        Args:
            source: File to copy.
            destination: Name of the copy, or an existing folder to copy it into.
        """
        src = self._file(source)
        dst = self._abs(destination)
        if dst in self.state["dirs"]:
            dst = posixpath.join(dst, posixpath.basename(src))
        self._free(dst)
        self.state["files"][dst] = self.state["files"][src]
        return PathResult(path=dst)

    def rm(self, file_name: str) -> PathResult:
        """Delete a file.

        Args:
            file_name: Name or path of the file.
        """
        path = self._file(file_name)
        del self.state["files"][path]
        return PathResult(path=path)

    def find(self, path: str = ".", name: str = "*") -> Matches:
        """Find files and folders below a folder whose name matches a pattern.

        Args:
            path: Folder to search from.
            name: Shell pattern for the name, e.g. "*.txt".
        """
        root = self._dir(path)
        found = [p for p in [*self.state["dirs"], *self.state["files"]]
                 if p != root and p.startswith(root.rstrip("/") + "/") and fnmatch.fnmatch(posixpath.basename(p), name)]
        return Matches(matches=sorted(posixpath.relpath(p, root) for p in found))

    def diff(self, file_name1: str, file_name2: str) -> Diff:
        """Compare two files line by line.

        Args:
            file_name1: First file.
            file_name2: Second file.
        """
        a = self.state["files"][self._file(file_name1)].splitlines()
        b = self.state["files"][self._file(file_name2)].splitlines()
        lines = list(difflib.unified_diff(a, b, file_name1, file_name2, lineterm=""))
        return Diff(identical=not lines, diff_lines=lines)

    def du(self, path: str = ".") -> DiskUsage:
        """Measure the total size of the files below a folder.

        Args:
            path: Folder to measure.
        """
        root = self._dir(path).rstrip("/") + "/"
        size = sum(len(c.encode()) for p, c in self.state["files"].items() if p.startswith(root))
        return DiskUsage(path=root.rstrip("/") or "/", size_bytes=size)
