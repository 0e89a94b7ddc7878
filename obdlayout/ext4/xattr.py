"""Extended attributes: in the inode's spare space first, then in one attribute block.

Layouts and hashes: kernel ext4 documentation, "Extended Attributes" (entry header, name indexes,
in-inode area after i_extra_isize, block header; entry hash over name and value words; block hash
over entry hashes). POSIX ACLs are converted from the xattr (VFS) form tar carries to ext4's own.
"""

import struct
from collections.abc import Mapping
from typing import Final, NamedTuple

from .layout import BLOCK_SIZE

XATTR_MAGIC: Final = 0xEA020000
ENTRY: Final = struct.Struct("<BBHIII")  # name_len, name_index, value_offs, value_inum, value_size, hash
BLOCK_HEADER: Final = struct.Struct("<IIIII12x")  # magic, refcount, blocks, hash, checksum, reserved
MAGIC: Final = struct.Struct("<I")
_NAME_HASH_SHIFT: Final = 5
_VALUE_HASH_SHIFT: Final = 16
_BLOCK_HASH_SHIFT: Final = 16
_MASK: Final = 0xFFFFFFFF

# Name index prefixes (kernel fs/ext4/xattr.h, EXT4_XATTR_INDEX_*); whole names come first.
_INDEXES: Final[list[tuple[str, int]]] = [
    ("system.posix_acl_access", 2),
    ("system.posix_acl_default", 3),
    ("system.richacl", 8),
    ("user.", 1),
    ("trusted.", 4),
    ("security.", 6),
    ("system.", 7),
]
_ACL_INDEXES: Final = {2, 3}
_PREFIX_OF_INDEX: Final = {index: prefix for prefix, index in _INDEXES}

# POSIX ACL: VFS form (version 2, 8-byte entries) and ext4 form (version 1, short entries for the owner classes).
_VFS_ACL_VERSION: Final = 2
_EXT4_ACL_VERSION: Final = 1
_ACL_HEADER: Final = struct.Struct("<I")
_VFS_ACL_ENTRY: Final = struct.Struct("<HHI")
_ACL_SHORT: Final = struct.Struct("<HH")
_ACL_USER, _ACL_GROUP = 0x02, 0x08
_ACL_UNDEFINED_ID: Final = 0xFFFFFFFF  # the id the kernel reports for the owner, group, mask and other entries


class XattrError(ValueError):
    """An attribute that ext4 cannot store."""


class Attr(NamedTuple):
    name_index: int
    name: bytes  # without the index's prefix
    value: bytes

    @property
    def entry_size(self) -> int:
        return (ENTRY.size + len(self.name) + 3) & ~3

    @property
    def value_size(self) -> int:
        return (len(self.value) + 3) & ~3


def split_name(full: str) -> tuple[int, bytes] | None:
    """(name index, suffix) for a namespace ext4 stores; None for others (e.g. "gnu.")."""
    for prefix, index in _INDEXES:
        whole_name = not prefix.endswith(".")
        if full == prefix or (not whole_name and full.startswith(prefix)):
            return index, full[len(prefix) :].encode("utf-8", "surrogateescape")
    return None


def acl_to_disk(value: bytes) -> bytes:
    """A POSIX ACL xattr value as tar carries it (VFS form) in ext4's on-disk form."""
    if len(value) < _ACL_HEADER.size or (len(value) - _ACL_HEADER.size) % _VFS_ACL_ENTRY.size:
        raise XattrError("POSIX ACL value has a bad length")
    (version,) = _ACL_HEADER.unpack_from(value)
    if version != _VFS_ACL_VERSION:
        raise XattrError(f"POSIX ACL version {version} is not 2")
    out = [_ACL_HEADER.pack(_EXT4_ACL_VERSION)]
    for tag, perm, ident in _VFS_ACL_ENTRY.iter_unpack(value[_ACL_HEADER.size :]):
        named = tag in (_ACL_USER, _ACL_GROUP)
        out.append(_VFS_ACL_ENTRY.pack(tag, perm, ident) if named else _ACL_SHORT.pack(tag, perm))
    return b"".join(out)


def acl_from_disk(value: bytes) -> bytes:
    """An ext4 on-disk POSIX ACL in the form getxattr and tar carry (the inverse of xattr.acl_to_disk)."""
    if len(value) < _ACL_HEADER.size or _ACL_HEADER.unpack_from(value)[0] != _EXT4_ACL_VERSION:
        raise XattrError("POSIX ACL xattr has a bad header")
    out = [_ACL_HEADER.pack(_VFS_ACL_VERSION)]
    pos = _ACL_HEADER.size
    while pos < len(value):
        if pos + _ACL_SHORT.size > len(value):
            raise XattrError("POSIX ACL xattr ends inside an entry")
        tag, perm = _ACL_SHORT.unpack_from(value, pos)
        if tag in (_ACL_USER, _ACL_GROUP):
            if pos + _VFS_ACL_ENTRY.size > len(value):
                raise XattrError("POSIX ACL xattr ends inside an entry")
            out.append(value[pos : pos + _VFS_ACL_ENTRY.size])
            pos += _VFS_ACL_ENTRY.size
        else:
            out.append(_VFS_ACL_ENTRY.pack(tag, perm, _ACL_UNDEFINED_ID))
            pos += _ACL_SHORT.size
    return b"".join(out)


def value_from_disk(index: int, value: bytes) -> bytes:
    """A stored attribute value as getxattr and tar carry it (ACLs converted back)."""
    return acl_from_disk(value) if index in _ACL_INDEXES else value


def index_prefix(index: int) -> str | None:
    """The name prefix of a name index (None for one ext4 does not define)."""
    return _PREFIX_OF_INDEX.get(index)


def make_attrs(xattrs: Mapping[str, bytes]) -> tuple[list[Attr], list[str]]:
    """The attributes to store, sorted as the kernel keeps them in blocks, and the names left out."""
    attrs: list[Attr] = []
    skipped: list[str] = []
    for full, value in xattrs.items():
        split = split_name(full)
        if split is None:
            skipped.append(full)
            continue
        index, name = split
        if len(name) > 255:
            raise XattrError(f"xattr name {full!r} is longer than 255 bytes")
        attrs.append(Attr(index, name, acl_to_disk(value) if index in _ACL_INDEXES else value))
    attrs.sort(key=lambda a: (a.name_index, len(a.name), a.name))
    return attrs, skipped


def entry_hash(attr: Attr) -> int:
    h = 0
    for byte in attr.name:
        h = ((h << _NAME_HASH_SHIFT) & _MASK) ^ (h >> (32 - _NAME_HASH_SHIFT)) ^ byte
    padded = attr.value.ljust(attr.value_size, b"\0")
    for (word,) in struct.iter_unpack("<I", padded):
        h = ((h << _VALUE_HASH_SHIFT) & _MASK) ^ (h >> (32 - _VALUE_HASH_SHIFT)) ^ word
    return h


def _block_hash(hashes: list[int]) -> int:
    h = 0
    for entry in hashes:
        h = ((h << _BLOCK_HASH_SHIFT) & _MASK) ^ (h >> (32 - _BLOCK_HASH_SHIFT)) ^ entry
    return h


def _pack(attrs: list[Attr], area: int, entries_at: int, value_base: int) -> tuple[bytearray, list[int]]:
    """Entries from `entries_at` down, values from the area's end up; value offsets count from `value_base`."""
    out = bytearray(area)
    pos = entries_at
    end = area
    hashes = []
    for attr in attrs:
        end -= attr.value_size
        out[end : end + len(attr.value)] = attr.value
        h = entry_hash(attr)
        hashes.append(h)
        ENTRY.pack_into(out, pos, len(attr.name), attr.name_index, end - value_base, 0, len(attr.value), h)
        out[pos + ENTRY.size : pos + ENTRY.size + len(attr.name)] = attr.name
        pos += attr.entry_size
    return out, hashes


def _fits(attrs: list[Attr], space: int) -> bool:
    return sum(a.entry_size + a.value_size for a in attrs) + MAGIC.size <= space


def layout(attrs: list[Attr], inode_space: int) -> tuple[bytes, bytes | None]:
    """The in-inode area (magic + entries + values, `inode_space` bytes; empty if none fit) and the block, if needed."""
    in_inode: list[Attr] = []
    for attr in attrs:
        if _fits([*in_inode, attr], inode_space - MAGIC.size):
            in_inode.append(attr)
    rest = [a for a in attrs if a not in in_inode]
    inode_area = b""
    if in_inode:
        body, _ = _pack(in_inode, inode_space - MAGIC.size, 0, 0)
        inode_area = MAGIC.pack(XATTR_MAGIC) + bytes(body)
    if not rest:
        return inode_area, None
    room = BLOCK_SIZE - BLOCK_HEADER.size
    if not _fits(rest, room):
        need = sum(a.entry_size + a.value_size for a in rest) + MAGIC.size
        big = max(rest, key=lambda a: len(a.value))
        raise XattrError(
            f"xattrs need {need} bytes beyond the inode (largest value {len(big.value)} bytes); "
            f"an ext4 attribute block holds {room}"
        )
    block, hashes = _pack(rest, BLOCK_SIZE, BLOCK_HEADER.size, 0)
    BLOCK_HEADER.pack_into(block, 0, XATTR_MAGIC, 1, 1, _block_hash(hashes), 0)
    return inode_area, bytes(block)


def block_refcount(block: bytes | bytearray) -> int | None:
    """The reference count of an attribute block, or None if it does not carry the magic."""
    magic, refcount, *_ = BLOCK_HEADER.unpack_from(block, 0)
    return refcount if magic == XATTR_MAGIC else None
