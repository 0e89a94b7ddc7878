"""An independent model of what a stack of OCI layer tars makes: path -> node, with hard-link identity.

Written from the rules, not from obdlayout: its own tar reader (POSIX ustar and pax, GNU long
names, base-256 numbers, old GNU sparse and PAX sparse 1.0 files) and the OCI image-spec layer
rules (image-spec layer.md "Whiteouts"), with the behaviour the spec leaves open taken from what
containerd and overlaybd-apply do (shared/specs/overlaybd-formats.md §6.4):

- member names are cleaned Plan 9 style (empty and "." parts dropped, ".." never above the root);
  a member naming the root is skipped;
- symlinks among the parent directories resolve inside the image (absolute targets from the
  image's root, ".." never above it); missing parents are created 0755 root:root, time 0, also for
  whiteouts (containerd's mkparent and overlaybd-apply both run before the whiteout is handled);
- `.wh.NAME` removes NAME (recursively) unless this layer created it; `.wh..wh..opq` hides
  everything the lower layers put below its directory: children this layer did not create go,
  and inside re-created directories the walk continues (containerd's `filepath.Walk`);
  a whiteout below a non-directory deletes nothing; whiteouts are never stored;
- an existing path is replaced, except a directory over a directory, which keeps its children
  and takes the new mode, owner, time and xattrs;
- a hard link adds a name to the target's node (its own header's metadata is not applied);
- symlinks have mode 0777; times are the tar mtime with the PAX nanoseconds (floor);
- xattrs from `SCHILY.xattr.*` in the namespaces ext4 stores (user, trusted, security, the two
  POSIX ACLs); ACL values compare in a canonical VFS form (see `canonical_xattr`).
"""

import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Protocol

BLOCK = 512
ROOT = b"/"
LOST_FOUND = b"/lost+found"
MAX_SYMLINK_HOPS = 40
STORED_XATTR_PREFIXES = ("user.", "trusted.", "security.")
ACL_NAMES = ("system.posix_acl_access", "system.posix_acl_default")
_ACL_NAMED = (0x02, 0x08)  # ACL_USER, ACL_GROUP: the only entries whose id means something
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_HASH_CHUNK = 1 << 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class ModelError(Exception):
    """The tar breaks a rule (the model refuses it, as a correct writer must)."""


# -- the tar reader ---------------------------------------------------------------------------------


@dataclass
class Member:
    """One tar member after its extension headers were applied."""

    name: bytes
    kind: bytes  # typeflag; b"5" also for old-style directories ("\0" and a trailing '/')
    mode: int
    uid: int
    gid: int
    mtime: tuple[int, int]  # seconds, nanoseconds
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    size: int = 0  # logical size of regular files (with holes)
    sha256: str = EMPTY_SHA256  # of the logical contents of regular files
    regions: list[tuple[int, int]] | None = None  # data regions of sparse files


def _number(raw: bytes) -> int:
    if raw and raw[0] == 0x80:
        return int.from_bytes(raw[1:], "big")
    if raw and raw[0] == 0xFF:
        return int.from_bytes(raw, "big", signed=True)
    text = raw.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


_PAX_DECIMAL = re.compile(rb"-?[0-9]+(\.[0-9]*)?")
MAJOR_LIMIT, MINOR_LIMIT = 1 << 12, 1 << 20  # Linux dev_t: 12-bit majors, 20-bit minors


def pax_time(text: bytes) -> tuple[int, int]:
    """A PAX decimal time as (seconds, nanoseconds), both floored. POSIX: digits, an optional
    fraction, nothing else (no exponent, no infinity)."""
    if not _PAX_DECIMAL.fullmatch(text):
        raise ModelError(f"PAX time {text!r} is not a decimal number")
    exact = Fraction(text.decode("ascii"))
    seconds = exact.numerator // exact.denominator
    return seconds, int((exact - seconds) * 1_000_000_000)


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos]:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if not record.endswith(b"\n") or b"=" not in record:
            raise ModelError(f"bad PAX record {record[:40]!r}")
        key, _, value = record[:-1].partition(b"=")
        records[key] = value
        pos += length
    return records


class _Stream:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read(self, size: int) -> bytes:
        data = self.f.read(size)
        if len(data) != size:
            raise ModelError("the tar ends early")
        return data

    def data(self, size: int) -> Iterator[bytes]:
        left = size
        while left:
            chunk = self.read(min(left, _HASH_CHUNK))
            left -= len(chunk)
            yield chunk
        self.read(-size % BLOCK)


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    blanked = block[:148] + b" " * 8 + block[156:]
    return stored in (sum(blanked), sum(b - 256 if b > 127 else b for b in blanked))


def read_tar(path: Path) -> Iterator[Member]:
    """The members of a layer tar, in order; regular files come with the sha256 of their contents."""
    with path.open("rb") as f:
        stream = _Stream(f)
        global_pax: dict[bytes, bytes] = {}
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            block = stream.read(BLOCK)
            if not any(block):
                return
            if not _checksum_ok(block):
                raise ModelError("bad header checksum")
            kind = block[156:157]
            size = _number(block[124:136])
            if kind in (b"x", b"g", b"L", b"K"):
                data = b"".join(stream.data(size))
                if kind == b"x":
                    pax.update(_pax_records(data))
                elif kind == b"L":
                    long_name = _cstr(data)
                elif kind == b"K":
                    long_link = _cstr(data)
                else:  # global: defaults for every later member (POSIX pax "g")
                    global_pax.update(_pax_records(data))
                continue
            yield _member(stream, block, kind, size, {**global_pax, **pax}, long_name, long_link)
            pax, long_name, long_link = {}, None, None


def _member(
    stream: _Stream,
    block: bytes,
    kind: bytes,
    size: int,
    pax: dict[bytes, bytes],
    long_name: bytes | None,
    long_link: bytes | None,
) -> Member:
    name = _cstr(block[0:100])
    if block[257:263] == b"ustar\0" and block[345]:
        name = _cstr(block[345:500]) + b"/" + name
    name = pax.get(b"path", long_name if long_name is not None else name)
    if kind == b"\0" and name.endswith(b"/"):
        kind = b"5"
    mtime = pax_time(pax[b"mtime"]) if b"mtime" in pax else (_number(block[136:148]), 0)
    member = Member(
        name=name,
        kind=kind,
        mode=_number(block[100:108]) & 0o7777,
        uid=int(pax[b"uid"]) if b"uid" in pax else _number(block[108:116]),
        gid=int(pax[b"gid"]) if b"gid" in pax else _number(block[116:124]),
        mtime=mtime,
        linkname=pax.get(b"linkpath", long_link if long_link is not None else _cstr(block[157:257])),
        devmajor=_number(block[329:337]),
        devminor=_number(block[337:345]),
        xattrs={
            key[len(b"SCHILY.xattr.") :].decode("utf-8", "surrogateescape"): value
            for key, value in pax.items()
            if key.startswith(b"SCHILY.xattr.")
        },
    )
    if b"size" in pax:
        size = int(pax[b"size"])
    if size < 0:
        raise ModelError(f"negative size {size}")
    if kind == b"S":
        _old_gnu_sparse(stream, block, size, member)
    elif b"GNU.sparse.major" in pax:
        _pax_sparse(stream, pax, size, member)
    elif kind in (b"0", b"\0", b"7"):
        digest = hashlib.sha256()
        for chunk in stream.data(size):
            digest.update(chunk)
        member.size, member.sha256 = size, digest.hexdigest()
    elif kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
        pass  # no data, whatever the size field says (as tar readers treat these types)
    else:
        raise ModelError(f"entry type {kind!r} is not a file system object")
    return member


def _sparse_map(raw: bytes, count: int) -> list[tuple[int, int]]:
    pairs = []
    for i in range(count):
        entry = raw[24 * i : 24 * i + 24]
        if not any(entry):
            break
        pairs.append((_number(entry[:12]), _number(entry[12:])))
    return pairs


def _old_gnu_sparse(stream: _Stream, block: bytes, stored: int, member: Member) -> None:
    regions = _sparse_map(block[386:482], 4)
    extended = block[482]
    while extended:
        ext = stream.read(BLOCK)
        regions += _sparse_map(ext[:504], 21)
        extended = ext[504]
    _sparse_contents(stream, member, regions, _number(block[483:495]), stored)


def _pax_sparse(stream: _Stream, pax: dict[bytes, bytes], stored: int, member: Member) -> None:
    if pax[b"GNU.sparse.major"] != b"1":
        raise ModelError("only PAX sparse 1.0 is modelled")
    member.name = pax[b"GNU.sparse.name"]
    text = b""
    while True:
        text += stream.read(BLOCK)
        lines = text.split(b"\n")
        if len(lines) > 1 and len(lines) > 1 + 2 * int(lines[0]):
            break
    numbers = [int(n) for n in lines[1 : 1 + 2 * int(lines[0])]]
    regions = list(zip(numbers[::2], numbers[1::2], strict=True))
    _sparse_contents(stream, member, regions, int(pax[b"GNU.sparse.realsize"]), stored - len(text))


def _sparse_contents(
    stream: _Stream, member: Member, regions: list[tuple[int, int]], realsize: int, stored: int
) -> None:
    """Regions' data lie back to back, each but the last a whole number of 512-byte blocks here
    (GNU tar pads each region, other readers do not: the fixtures only use maps where both agree)."""
    data_regions = [(offset, length) for offset, length in regions if length]
    if sum(length for _, length in data_regions) != stored:
        raise ModelError("the sparse map does not add up to the stored size")
    digest = hashlib.sha256()
    pos = 0
    chunks = stream.data(stored)
    pending = b""
    for offset, length in data_regions:
        if offset < pos:
            raise ModelError("sparse regions overlap or are out of order")
        _zeros(digest, offset - pos)
        need = length
        while need:
            if not pending:
                pending = next(chunks)
            take = pending[:need]
            pending = pending[need:]
            digest.update(take)
            need -= len(take)
        pos = offset + length
    for _ in chunks:
        pass
    if realsize < pos:
        raise ModelError("sparse data beyond the real size")
    _zeros(digest, realsize - pos)
    member.size, member.sha256, member.regions = realsize, digest.hexdigest(), data_regions


_ZEROS = bytes(_HASH_CHUNK)


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _zeros(digest: _Digest, count: int) -> None:
    while count:
        take = min(count, _HASH_CHUNK)
        digest.update(_ZEROS[:take])
        count -= take


# -- the tree ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """A file system object; hard links are the same Node under several names."""

    kind: str  # dir, file, symlink, chr, blk, fifo
    mode: int
    uid: int
    gid: int
    mtime: tuple[int, int]
    xattrs: dict[str, bytes] = field(default_factory=dict)
    size: int = 0
    sha256: str | None = None
    target: bytes | None = None
    rdev: tuple[int, int] | None = None
    regions: list[tuple[int, int]] | None = None
    children: dict[bytes, "Node"] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """What a reader sees at one path; the same structure from the model and from the image readers."""

    kind: str
    mode: int  # permission bits, 0o7777
    uid: int
    gid: int
    mtime: tuple[int, int]
    links: int
    size: int = 0  # regular files and symlinks; 0 for the rest
    sha256: str | None = None  # regular files
    target: bytes | None = None  # symlinks
    rdev: tuple[int, int] | None = None  # devices
    xattrs: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Tree:
    entries: dict[bytes, Entry]
    groups: set[frozenset[bytes]]  # names of one object, for objects with several names


def canonical_xattr(name: str, value: bytes) -> bytes:
    """POSIX ACLs: the ids of unnamed entries mean nothing (ext4 does not store them; the kernel
    reports ACL_UNDEFINED_ID, e2fsprogs 0), so they compare as ACL_UNDEFINED_ID."""
    if name not in ACL_NAMES or len(value) < 4 or (len(value) - 4) % 8:
        return value
    out = [value[:4]]
    for tag, perm, ident in struct.iter_unpack("<HHI", value[4:]):
        out.append(struct.pack("<HHI", tag, perm, ident if tag in _ACL_NAMED else _ACL_UNDEFINED_ID))
    return b"".join(out)


def stored_xattrs(xattrs: dict[str, bytes]) -> dict[str, bytes]:
    return {
        name: canonical_xattr(name, value)
        for name, value in xattrs.items()
        if name.startswith(STORED_XATTR_PREFIXES) or name in ACL_NAMES
    }


def clean(name: bytes) -> list[bytes]:
    parts: list[bytes] = []
    for part in name.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return parts


class _NotADirectory(Exception):
    pass


class Model:
    """The image a stack of layers makes, starting from an empty file system (root + lost+found)."""

    def __init__(
        self, root_mode: int = 0o755, root_uid: int = 0, root_gid: int = 0, root_mtime: tuple[int, int] = (0, 0)
    ) -> None:
        self.root = Node("dir", root_mode, root_uid, root_gid, root_mtime)
        self.root.children[b"lost+found"] = Node("dir", 0o700, 0, 0, (0, 0))

    @classmethod
    def from_root_entry(cls, entry: Entry) -> "Model":
        """A model whose root has the attributes an existing image's root has (e.g. the baselayer's)."""
        model = cls(entry.mode, entry.uid, entry.gid, entry.mtime)
        model.root.xattrs = dict(entry.xattrs)
        return model

    @classmethod
    def from_tree(cls, tree: Tree) -> "Model":
        """A model holding an existing image's tree (as a reader gave it), hard links included."""
        root = tree.entries[ROOT]
        model = cls.from_root_entry(root)
        shared: dict[bytes, Node] = {}
        for group in tree.groups:
            first = tree.entries[min(group)]
            node = cls._node_of(first)
            for path in group:
                shared[path] = node
        for path in sorted(tree.entries, key=lambda p: (p.count(b"/"), p)):
            if path == ROOT:
                continue
            parent_path, _, name = path.rpartition(b"/")
            parent = model.node(parent_path or ROOT)
            parent.children[name] = shared.get(path) or cls._node_of(tree.entries[path])
        return model

    @staticmethod
    def _node_of(entry: Entry) -> Node:
        return Node(
            entry.kind,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.mtime,
            dict(entry.xattrs),
            entry.size,
            entry.sha256,
            entry.target,
            entry.rdev,
        )

    # -- applying ------------------------------------------------------------------------------

    def apply(self, tar: Path) -> None:
        created: set[tuple[Node, bytes]] = set()
        for member in read_tar(tar):
            self._member(member, created)

    def _walk(self, parts: list[bytes], create: bool, created: set[tuple[Node, bytes]]) -> Node | None:
        """The directory at `parts`, symlinks resolved inside the image; None if missing and not created.
        Raises _NotADirectory if a non-directory is in the way."""
        trail = [self.root]
        todo = list(reversed(parts))
        hops = 0
        while todo:
            name = todo.pop()
            if name in (b"", b"."):
                continue
            if name == b"..":
                if len(trail) > 1:
                    trail.pop()
                continue
            here = trail[-1]
            child = here.children.get(name)
            if child is None:
                if not create:
                    return None
                child = Node("dir", 0o755, 0, 0, (0, 0))
                here.children[name] = child
                created.add((here, name))
            if child.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ModelError("too many symlinks")
                assert child.target is not None
                if child.target.startswith(b"/"):
                    trail = [self.root]
                todo.extend(reversed(child.target.split(b"/")))
                continue
            if child.kind != "dir":
                raise _NotADirectory
            trail.append(child)
        return trail[-1]

    def _member(self, m: Member, created: set[tuple[Node, bytes]]) -> None:
        parts = clean(m.name)
        if not parts:
            return
        *parent_parts, base = parts
        if base.startswith(b".wh."):
            try:
                parent = self._walk(parent_parts, True, created)
            except _NotADirectory:
                return
            assert parent is not None
            if base == b".wh..wh..opq":
                self._opaque(parent, created)
            else:
                name = base[len(b".wh.") :]
                if name in parent.children and (parent, name) not in created:
                    del parent.children[name]
            return
        try:
            parent = self._walk(parent_parts, True, created)
        except _NotADirectory:
            raise ModelError(f"a parent of {m.name!r} is not a directory") from None
        assert parent is not None
        existing = parent.children.get(base)
        if m.kind == b"1":
            node = self._lookup(m.linkname, created)
            if existing is node:
                created.add((parent, base))
                return
            if existing is not None:
                # containerd removes the replaced path before it links: a target below that path goes with it.
                del parent.children[base]
                node = self._lookup(m.linkname, created)
        elif m.kind == b"5" and existing is not None and existing.kind == "dir":
            existing.mode, existing.uid, existing.gid, existing.mtime = m.mode, m.uid, m.gid, m.mtime
            existing.xattrs = stored_xattrs(m.xattrs)
            created.add((parent, base))
            return
        else:
            node = self._node(m)
        if len(base) > 255:
            raise ModelError(f"name {base!r} is longer than 255 bytes")
        parent.children.pop(base, None)
        parent.children[base] = node
        created.add((parent, base))

    def _lookup(self, linkname: bytes, created: set[tuple[Node, bytes]]) -> Node:
        parts = clean(linkname)
        if not parts:
            raise ModelError("hard link to the root")
        try:
            parent = self._walk(parts[:-1], False, created)
        except _NotADirectory:
            parent = None
        node = parent.children.get(parts[-1]) if parent is not None else None
        if node is None:
            raise ModelError(f"hard link target {linkname!r} does not exist")
        if node.kind == "dir":
            raise ModelError("hard link to a directory")
        return node

    def _opaque(self, directory: Node, created: set[tuple[Node, bytes]]) -> None:
        for name, child in list(directory.children.items()):
            if (directory, name) not in created:
                del directory.children[name]
            elif child.kind == "dir":
                self._opaque(child, created)

    @staticmethod
    def _node(m: Member) -> Node:
        xattrs = stored_xattrs(m.xattrs)
        if m.kind == b"5":
            return Node("dir", m.mode, m.uid, m.gid, m.mtime, xattrs)
        if m.kind in (b"0", b"\0", b"7", b"S"):
            return Node("file", m.mode, m.uid, m.gid, m.mtime, xattrs, m.size, m.sha256, regions=m.regions)
        if m.kind == b"2":
            return Node("symlink", 0o777, m.uid, m.gid, m.mtime, xattrs, len(m.linkname), target=m.linkname)
        if m.kind in (b"3", b"4"):
            if not (0 <= m.devmajor < MAJOR_LIMIT and 0 <= m.devminor < MINOR_LIMIT):
                raise ModelError(f"device {m.devmajor}:{m.devminor} does not fit Linux's 12+20 bits")
            kind = "chr" if m.kind == b"3" else "blk"
            return Node(kind, m.mode, m.uid, m.gid, m.mtime, xattrs, rdev=(m.devmajor, m.devminor))
        if m.kind == b"6":
            return Node("fifo", m.mode, m.uid, m.gid, m.mtime, xattrs)
        raise ModelError(f"entry type {m.kind!r} cannot be stored")

    # -- reading ----------------------------------------------------------------------------------

    def walk(self) -> Iterator[tuple[bytes, Node]]:
        """(path, node) for every name but lost+found and what is below it; the root is b"/"."""
        todo: list[tuple[bytes, Node]] = [(ROOT, self.root)]
        while todo:
            path, node = todo.pop()
            yield path, node
            for name, child in node.children.items():
                child_path = (path.rstrip(b"/") + b"/" + name) if path != ROOT else b"/" + name
                if child_path != LOST_FOUND:
                    todo.append((child_path, child))

    def tree(self) -> Tree:
        names: dict[int, list[bytes]] = {}
        nodes: dict[int, Node] = {}
        for path, node in self.walk():
            names.setdefault(id(node), []).append(path)
            nodes[id(node)] = node
        entries: dict[bytes, Entry] = {}
        for key, paths in names.items():
            node = nodes[key]
            if node.kind == "dir":
                links = 2 + sum(1 for child in node.children.values() if child.kind == "dir")
            else:
                links = len(paths)
            entry = Entry(
                kind=node.kind,
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                mtime=node.mtime,
                links=links,
                size=node.size if node.kind in ("file", "symlink") else 0,
                sha256=node.sha256 if node.kind == "file" else None,
                target=node.target,
                rdev=node.rdev,
                xattrs=tuple(sorted(node.xattrs.items())),
            )
            for path in paths:
                entries[path] = entry
        groups = {frozenset(paths) for paths in names.values() if len(paths) > 1}
        return Tree(entries, groups)

    def node(self, path: bytes) -> Node:
        node = self.root
        for part in clean(path):
            node = node.children[part]
        return node


def model_of(tars: list[Path], base: Model | None = None) -> Model:
    model = base if base is not None else Model()
    for tar in tars:
        model.apply(tar)
    return model


# -- comparing ----------------------------------------------------------------------------------------


def _show(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _brief(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def differences(expected: Tree, actual: Tree, limit: int = 60) -> list[str]:
    """Every difference, readable: missing and extra paths, then field by field, then hard-link groups."""
    out: list[str] = []
    for path in sorted(expected.entries.keys() - actual.entries.keys()):
        out.append(f"missing {_show(path)}: {_brief(expected.entries[path])}")
    for path in sorted(actual.entries.keys() - expected.entries.keys()):
        out.append(f"unexpected {_show(path)}: {_brief(actual.entries[path])}")
    for path in sorted(expected.entries.keys() & actual.entries.keys()):
        want, got = expected.entries[path], actual.entries[path]
        if want == got:
            continue
        for name in Entry.__dataclass_fields__:
            a, b = getattr(want, name), getattr(got, name)
            if a != b:
                if name == "mode":
                    a, b = oct(a), oct(b)
                out.append(f"{_show(path)}: {name} expected {_brief(a)}, got {_brief(b)}")
    for group in sorted(expected.groups - actual.groups, key=sorted):
        out.append(f"missing hard-link group {sorted(_show(p) for p in group)}")
    for group in sorted(actual.groups - expected.groups, key=sorted):
        out.append(f"unexpected hard-link group {sorted(_show(p) for p in group)}")
    if len(out) > limit:
        out = [*out[:limit], f"... and {len(out) - limit} more"]
    return out
