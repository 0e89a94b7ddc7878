"""Linear directories: parse blocks into a name table, and lay a name table out into blocks.

Entry layout: kernel ext4 documentation, "Linear (Classic) Directories" (ext4_dir_entry_2). A
hashed (htree) directory read linearly yields exactly its entries: its index blocks look like
empty entries spanning the block, so reading and rewriting it as linear is always valid.
"""

from collections.abc import Iterable, Iterator
from typing import Final

from .errors import CorruptFilesystem
from .layout import BLOCK_SIZE, DIRENT_HEADER, FT_DIR

_EMPTY_BLOCK: Final = DIRENT_HEADER.pack(0, BLOCK_SIZE, 0, 0).ljust(BLOCK_SIZE, b"\0")
_DOT: Final = b"."
_DOTDOT: Final = b".."


def _entry_size(name_len: int) -> int:
    return (DIRENT_HEADER.size + name_len + 3) & ~3


class Directory:
    """A directory's entries by name (without "." and ".."), in on-disk order, plus its parent."""

    def __init__(self, ino: int, parent: int, blocks: list[int]) -> None:
        self.ino = ino
        self.parent = parent
        self.blocks = blocks  # physical blocks in logical order, as on disk now
        self.entries: dict[bytes, tuple[int, int]] = {}  # name -> (inode, file type)
        self.dirty = False
        # Directories never shrink (as in the kernel): a rewrite keeps at least this many blocks.
        self.min_blocks = max(1, len(blocks))

    @classmethod
    def parse(cls, ino: int, blocks: list[int], contents: Iterable[bytes | bytearray], where: str) -> "Directory":
        directory = cls(ino, 0, blocks)
        for data in contents:
            pos = 0
            while pos < BLOCK_SIZE:
                inode, rec_len, name_len, file_type = DIRENT_HEADER.unpack_from(data, pos)
                if rec_len < DIRENT_HEADER.size or rec_len % 4 or pos + rec_len > BLOCK_SIZE:
                    raise CorruptFilesystem(f"{where}: directory entry at {pos} has bad length {rec_len}")
                if inode:
                    if DIRENT_HEADER.size + name_len > rec_len:
                        raise CorruptFilesystem(f"{where}: directory entry at {pos} overruns its record")
                    name = bytes(data[pos + DIRENT_HEADER.size : pos + DIRENT_HEADER.size + name_len])
                    if name == _DOTDOT:
                        directory.parent = inode
                    elif name != _DOT:
                        directory.entries[name] = (inode, file_type)
                pos += rec_len
        return directory

    def subdirectories(self) -> int:
        return sum(1 for _, file_type in self.entries.values() if file_type == FT_DIR)

    def layout(self) -> list[bytes]:
        """The entries as linear directory blocks: ".", "..", then by name in table order."""
        blocks: list[bytes] = []
        block = bytearray(BLOCK_SIZE)
        pos = 0
        last = -1  # offset of the block's last entry, whose record runs to the block's end

        def finish() -> None:
            DIRENT_HEADER.pack_into(block, last, *_header_fields(block, last, BLOCK_SIZE - last))
            blocks.append(bytes(block))

        for name, inode, file_type in self._all():
            size = _entry_size(len(name))
            if pos + size > BLOCK_SIZE:
                finish()
                block = bytearray(BLOCK_SIZE)
                pos = 0
            DIRENT_HEADER.pack_into(block, pos, inode, size, len(name), file_type)
            block[pos + DIRENT_HEADER.size : pos + DIRENT_HEADER.size + len(name)] = name
            last = pos
            pos += size
        finish()
        while len(blocks) < self.min_blocks:
            blocks.append(_EMPTY_BLOCK)
        return blocks

    def _all(self) -> Iterator[tuple[bytes, int, int]]:
        yield _DOT, self.ino, FT_DIR
        yield _DOTDOT, self.parent, FT_DIR
        for name, (inode, file_type) in self.entries.items():
            yield name, inode, file_type


def _header_fields(block: bytearray, pos: int, rec_len: int) -> tuple[int, int, int, int]:
    inode, _, name_len, file_type = DIRENT_HEADER.unpack_from(block, pos)
    return inode, rec_len, name_len, file_type
