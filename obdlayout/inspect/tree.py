"""A root file system as a comparable model: one record per path; hard links are paths sharing one record.

Both sides of `verify --against` are reduced to this model: the converted image as read from its ext4
(fstree.py) and the source image as the OCI layer rules make it (source.py). File contents are kept as
their sha256 only, so a model costs memory per path, never per byte.
"""

import stat
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

KIND_NAMES = {
    stat.S_IFREG: "regular file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


@dataclass(slots=True)
class Node:
    kind: int  # stat.S_IF*
    mode: int  # permission bits, setuid/setgid/sticky included
    uid: int
    gid: int
    mtime: tuple[int, int]  # seconds, nanoseconds
    size: int = 0  # regular files only
    sha256: str | None = None  # regular files only: hex digest of the contents
    target: bytes | None = None  # symlinks only
    rdev: tuple[int, int] | None = None  # devices only: major, minor
    xattrs: dict[str, bytes] = field(default_factory=dict)


Tree = dict[bytes, Node]  # path relative to the root (b"a/b"; b"" is the root) -> record


def kind_name(kind: int) -> str:
    return KIND_NAMES.get(kind, f"file type {kind:#o}")


def display(path: bytes) -> str:
    """A path for messages: absolute, undecodable bytes escaped."""
    return "/" + path.decode("utf-8", "backslashreplace")


def link_groups(tree: Tree) -> dict[bytes, tuple[bytes, ...]]:
    """For every path that shares its record with others: all those paths, sorted."""
    by_node: dict[int, list[bytes]] = defaultdict(list)
    for path, node in tree.items():
        if node.kind != stat.S_IFDIR:
            by_node[id(node)].append(path)
    groups: dict[bytes, tuple[bytes, ...]] = {}
    for paths in by_node.values():
        if len(paths) > 1:
            group = tuple(sorted(paths))
            groups.update((p, group) for p in paths)
    return groups


def differences(expected: Tree, actual: Tree) -> Iterator[tuple[bytes, str]]:
    """(path, what differs) for every path whose record differs, in path order; nothing for equal trees."""
    expected_links = link_groups(expected)
    actual_links = link_groups(actual)
    for path in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(path), actual.get(path)
        if have is None:
            yield path, "missing from the image"
            continue
        if want is None:
            yield path, f"not in the source: an extra {kind_name(have.kind)}"
            continue
        problems = list(_node_differences(want, have))
        single = (path,)
        wanted_group, group = expected_links.get(path, single), actual_links.get(path, single)
        if wanted_group != group:
            problems.append(f"hard links: expected {_names(wanted_group)}, found {_names(group)}")
        if problems:
            yield path, "; ".join(problems)


def _names(group: tuple[bytes, ...]) -> str:
    return "none" if len(group) == 1 else ", ".join(display(p) for p in group)


def _node_differences(want: Node, have: Node) -> Iterator[str]:
    if want.kind != have.kind:
        yield f"expected a {kind_name(want.kind)}, found a {kind_name(have.kind)}"
        return
    if want.mode != have.mode:
        yield f"mode {want.mode:04o} expected, found {have.mode:04o}"
    if (want.uid, want.gid) != (have.uid, have.gid):
        yield f"owner {want.uid}:{want.gid} expected, found {have.uid}:{have.gid}"
    if want.size != have.size:
        yield f"size {want.size} expected, found {have.size}"
    elif want.sha256 != have.sha256:
        yield "contents differ"
    if want.target != have.target:
        yield f"link target {want.target!r} expected, found {have.target!r}"
    if want.rdev != have.rdev:
        yield f"device {_dev(want.rdev)} expected, found {_dev(have.rdev)}"
    if want.mtime != have.mtime:
        yield f"mtime {_time(want.mtime)} expected, found {_time(have.mtime)}"
    if want.xattrs != have.xattrs:
        names = sorted(
            name for name in want.xattrs.keys() | have.xattrs.keys() if want.xattrs.get(name) != have.xattrs.get(name)
        )
        yield f"xattrs differ: {', '.join(names)}"


def _dev(rdev: tuple[int, int] | None) -> str:
    return "none" if rdev is None else f"{rdev[0]},{rdev[1]}"


def _time(mtime: tuple[int, int]) -> str:
    return f"{mtime[0]}.{mtime[1]:09d}"
