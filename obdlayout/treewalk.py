"""The depth-first walk of a file system tree that the readers (ext4, EROFS) share."""

import stat
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar


class _HasType(Protocol):
    @property
    def file_type(self) -> int: ...


I = TypeVar("I", bound=_HasType)  # noqa: E741 - a reader's inode type


def walk_tree(
    start: int, inode: Callable[[int], I], entries: Callable[[int], dict[bytes, int]], loop: Callable[[str], Exception]
) -> Iterator[tuple[tuple[bytes, ...], int, I]]:
    """(path, node, inode) of every entry under `start` (itself first, path ()), depth first, names in byte
    order. A directory met twice (a loop a crafted image may hold) raises `loop(message)`."""
    seen: set[int] = set()
    # A stack of pending siblings rather than recursion: a crafted image may nest deeper than Python.
    stack: list[Iterator[tuple[tuple[bytes, ...], int]]] = [iter([((), start)])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        path, node = item
        found = inode(node)
        yield path, node, found
        if found.file_type != stat.S_IFDIR:
            continue
        if node in seen:
            raise loop(f"directory inode {node} appears twice in the tree (at {b'/'.join(path)!r})")
        seen.add(node)
        stack.append(iter([((*path, name), child) for name, child in sorted(entries(node).items())]))
