"""ext4 on-disk structures: superblock, group descriptor, inode, extents, directory entries.

Field offsets follow the kernel's ext4 disk-layout documentation ("Super Block", "Block Group
Descriptors", "Index Nodes", "The Contents of inode.i_block", "Directory Entries"). Structures are
kept as raw bytes with named field accessors, so fields this writer does not know survive a rewrite.
"""

import struct
from typing import ClassVar, Final

BLOCK_SIZE: Final = 4096
LOG_BLOCK_SIZE: Final = 2  # block size = 1024 << 2
SUPERBLOCK_OFFSET: Final = 1024
SUPERBLOCK_SIZE: Final = 1024
EXT4_MAGIC: Final = 0xEF53
ROOT_INO: Final = 2
LOST_FOUND_INO: Final = 11
FIRST_INO: Final = 11  # inodes below this are reserved
GOOD_OLD_INODE_SIZE: Final = 128
INODE_SIZE: Final = 256
EXTRA_ISIZE: Final = 32  # the extra fields e2fsprogs fills: checksum_hi to projid
DESC_SIZE_64BIT: Final = 64
DESC_SIZE_32BIT: Final = 32

# Superblock s_feature_compat / incompat / ro_compat bits.
COMPAT_HAS_JOURNAL: Final = 0x4
COMPAT_EXT_ATTR: Final = 0x8
COMPAT_RESIZE_INODE: Final = 0x10
COMPAT_DIR_INDEX: Final = 0x20
COMPAT_SPARSE_SUPER2: Final = 0x200
INCOMPAT_FILETYPE: Final = 0x2
INCOMPAT_RECOVER: Final = 0x4
INCOMPAT_JOURNAL_DEV: Final = 0x8
INCOMPAT_META_BG: Final = 0x10
INCOMPAT_EXTENTS: Final = 0x40
INCOMPAT_64BIT: Final = 0x80
INCOMPAT_MMP: Final = 0x100
INCOMPAT_FLEX_BG: Final = 0x200
INCOMPAT_EA_INODE: Final = 0x400
INCOMPAT_DIRDATA: Final = 0x1000
INCOMPAT_CSUM_SEED: Final = 0x2000
INCOMPAT_LARGEDIR: Final = 0x4000
INCOMPAT_INLINE_DATA: Final = 0x8000
INCOMPAT_ENCRYPT: Final = 0x10000
INCOMPAT_CASEFOLD: Final = 0x20000
RO_COMPAT_SPARSE_SUPER: Final = 0x1
RO_COMPAT_LARGE_FILE: Final = 0x2
RO_COMPAT_HUGE_FILE: Final = 0x8
RO_COMPAT_GDT_CSUM: Final = 0x10
RO_COMPAT_DIR_NLINK: Final = 0x20
RO_COMPAT_EXTRA_ISIZE: Final = 0x40
RO_COMPAT_QUOTA: Final = 0x100
RO_COMPAT_BIGALLOC: Final = 0x200
RO_COMPAT_METADATA_CSUM: Final = 0x400
RO_COMPAT_READONLY: Final = 0x1000
RO_COMPAT_PROJECT: Final = 0x2000
RO_COMPAT_VERITY: Final = 0x8000

# What this writer can keep consistent when it modifies a file system made elsewhere.
SUPPORTED_INCOMPAT: Final = INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG
SUPPORTED_RO_COMPAT: Final = (
    RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
)

# Superblock s_state, s_errors, s_flags, s_def_hash_version, s_default_mount_opts.
STATE_CLEAN: Final = 1
ERRORS_CONTINUE: Final = 1
FLAGS_SIGNED_HASH: Final = 0x1
HASH_HALF_MD4: Final = 1
MOUNT_OPTS_XATTR_USER_ACL: Final = 0x0004 | 0x0008

# Group descriptor bg_flags.
BG_INODE_UNINIT: Final = 0x1
BG_BLOCK_UNINIT: Final = 0x2
BG_INODE_ZEROED: Final = 0x4

# Inode i_mode file types and i_flags.
S_IFMT: Final = 0o170000
S_IFSOCK: Final = 0o140000
S_IFLNK: Final = 0o120000
S_IFREG: Final = 0o100000
S_IFBLK: Final = 0o060000
S_IFDIR: Final = 0o040000
S_IFCHR: Final = 0o020000
S_IFIFO: Final = 0o010000
INODE_FLAG_INDEX: Final = 0x1000  # hashed (htree) directory
INODE_FLAG_HUGE_FILE: Final = 0x40000
INODE_FLAG_EXTENTS: Final = 0x80000
INODE_FLAG_INLINE_DATA: Final = 0x10000000
FAST_SYMLINK_MAX: Final = 59  # targets shorter than i_block's 60 bytes live in the inode
DIR_NLINK_MAX: Final = 65000  # past this a directory's link count is 1 (dir_nlink)

# Directory entry file types (filetype feature).
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)
FILE_TYPE_OF_MODE: Final = {
    S_IFREG: FT_REG,
    S_IFDIR: FT_DIR,
    S_IFCHR: FT_CHR,
    S_IFBLK: FT_BLK,
    S_IFIFO: FT_FIFO,
    S_IFSOCK: FT_SOCK,
    S_IFLNK: FT_SYMLINK,
}
DIRENT_HEADER: Final = struct.Struct("<IHBB")  # inode, rec_len, name_len, file_type
MAX_NAME_LEN: Final = 255

# Extent tree ("The Contents of inode.i_block").
EXTENT_MAGIC: Final = 0xF30A
EXTENT_HEADER: Final = struct.Struct("<HHHHI")  # magic, entries, max, depth, generation
EXTENT_LEAF: Final = struct.Struct("<IHHI")  # logical block, length, start_hi, start_lo
EXTENT_INDEX: Final = struct.Struct("<IIHH")  # logical block, leaf_lo, leaf_hi, unused
EXTENT_ENTRY_SIZE: Final = 12
EXTENT_MAX_INIT_LEN: Final = 32768  # longest initialized extent
EXTENT_UNINIT_FLAG: Final = 32768  # lengths above this mark unwritten extents
I_BLOCK_SIZE: Final = 60
EXTENTS_IN_INODE: Final = (I_BLOCK_SIZE - EXTENT_HEADER.size) // EXTENT_ENTRY_SIZE  # 4
EXTENTS_IN_BLOCK: Final = (BLOCK_SIZE - EXTENT_HEADER.size) // EXTENT_ENTRY_SIZE  # 340

SECTORS_PER_BLOCK: Final = BLOCK_SIZE // 512


class _Fields:
    """Little-endian fields of a raw structure, by name."""

    FIELDS: ClassVar[dict[str, tuple[int, str]]] = {}
    # FIELDS with each format compiled once: fields are read and written several times per inode.
    _COMPILED: ClassVar[dict[str, tuple[int, struct.Struct]]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._COMPILED = {name: (offset, struct.Struct("<" + fmt)) for name, (offset, fmt) in cls.FIELDS.items()}

    def __init__(self, raw: bytes | bytearray) -> None:
        self.raw = bytearray(raw)

    def get(self, name: str) -> int:
        offset, field = self._COMPILED[name]
        value: int = field.unpack_from(self.raw, offset)[0]
        return value

    def set(self, name: str, value: int) -> None:
        offset, field = self._COMPILED[name]
        field.pack_into(self.raw, offset, value)

    def _wide(self, lo: str, hi: str, bits: int = 32) -> int:
        return self.get(lo) | (self.get(hi) << bits)

    def _set_wide(self, lo: str, hi: str, value: int, bits: int = 32) -> None:
        self.set(lo, value & ((1 << bits) - 1))
        self.set(hi, value >> bits)


class Superblock(_Fields):
    FIELDS: ClassVar[dict[str, tuple[int, str]]] = {
        "s_inodes_count": (0x0, "I"),
        "s_blocks_count_lo": (0x4, "I"),
        "s_r_blocks_count_lo": (0x8, "I"),
        "s_free_blocks_count_lo": (0xC, "I"),
        "s_free_inodes_count": (0x10, "I"),
        "s_first_data_block": (0x14, "I"),
        "s_log_block_size": (0x18, "I"),
        "s_log_cluster_size": (0x1C, "I"),
        "s_blocks_per_group": (0x20, "I"),
        "s_clusters_per_group": (0x24, "I"),
        "s_inodes_per_group": (0x28, "I"),
        "s_max_mnt_count": (0x36, "h"),
        "s_magic": (0x38, "H"),
        "s_state": (0x3A, "H"),
        "s_errors": (0x3C, "H"),
        "s_rev_level": (0x4C, "I"),
        "s_first_ino": (0x54, "I"),
        "s_inode_size": (0x58, "H"),
        "s_block_group_nr": (0x5A, "H"),
        "s_feature_compat": (0x5C, "I"),
        "s_feature_incompat": (0x60, "I"),
        "s_feature_ro_compat": (0x64, "I"),
        "s_reserved_gdt_blocks": (0xCE, "H"),
        "s_def_hash_version": (0xFC, "B"),
        "s_desc_size": (0xFE, "H"),
        "s_default_mount_opts": (0x100, "I"),
        "s_first_meta_bg": (0x104, "I"),
        "s_blocks_count_hi": (0x150, "I"),
        "s_r_blocks_count_hi": (0x154, "I"),
        "s_free_blocks_count_hi": (0x158, "I"),
        "s_min_extra_isize": (0x15C, "H"),
        "s_want_extra_isize": (0x15E, "H"),
        "s_flags": (0x160, "I"),
        "s_log_groups_per_flex": (0x174, "B"),
        "s_backup_bgs_0": (0x24C, "I"),
        "s_backup_bgs_1": (0x250, "I"),
    }
    UUID_OFFSET: Final = 0x68
    UUID_SIZE: Final = 16

    @property
    def uuid(self) -> bytes:
        return bytes(self.raw[self.UUID_OFFSET : self.UUID_OFFSET + self.UUID_SIZE])

    def is_64bit(self) -> bool:
        return bool(self.get("s_feature_incompat") & INCOMPAT_64BIT)

    @property
    def blocks_count(self) -> int:
        lo = self.get("s_blocks_count_lo")
        return lo | (self.get("s_blocks_count_hi") << 32) if self.is_64bit() else lo

    @blocks_count.setter
    def blocks_count(self, value: int) -> None:
        self._set_wide("s_blocks_count_lo", "s_blocks_count_hi", value)

    @property
    def r_blocks_count(self) -> int:
        lo = self.get("s_r_blocks_count_lo")
        return lo | (self.get("s_r_blocks_count_hi") << 32) if self.is_64bit() else lo

    @r_blocks_count.setter
    def r_blocks_count(self, value: int) -> None:
        self._set_wide("s_r_blocks_count_lo", "s_r_blocks_count_hi", value)

    @property
    def free_blocks_count(self) -> int:
        lo = self.get("s_free_blocks_count_lo")
        return lo | (self.get("s_free_blocks_count_hi") << 32) if self.is_64bit() else lo

    @free_blocks_count.setter
    def free_blocks_count(self, value: int) -> None:
        if self.is_64bit():
            self._set_wide("s_free_blocks_count_lo", "s_free_blocks_count_hi", value)
        else:
            self.set("s_free_blocks_count_lo", value)

    @property
    def desc_size(self) -> int:
        return self.get("s_desc_size") if self.is_64bit() else DESC_SIZE_32BIT


class GroupDesc(_Fields):
    """One block group descriptor; 32 bytes, or 64 with the 64bit feature (then the _hi halves exist)."""

    FIELDS: ClassVar[dict[str, tuple[int, str]]] = {
        "bg_block_bitmap_lo": (0x0, "I"),
        "bg_inode_bitmap_lo": (0x4, "I"),
        "bg_inode_table_lo": (0x8, "I"),
        "bg_free_blocks_count_lo": (0xC, "H"),
        "bg_free_inodes_count_lo": (0xE, "H"),
        "bg_used_dirs_count_lo": (0x10, "H"),
        "bg_flags": (0x12, "H"),
        "bg_itable_unused_lo": (0x1C, "H"),
        "bg_checksum": (0x1E, "H"),
        "bg_block_bitmap_hi": (0x20, "I"),
        "bg_inode_bitmap_hi": (0x24, "I"),
        "bg_inode_table_hi": (0x28, "I"),
        "bg_free_blocks_count_hi": (0x2C, "H"),
        "bg_free_inodes_count_hi": (0x2E, "H"),
        "bg_used_dirs_count_hi": (0x30, "H"),
        "bg_itable_unused_hi": (0x32, "H"),
    }
    CHECKSUM_OFFSET: Final = 0x1E

    def _pair(self, lo: str, hi: str, bits: int) -> int:
        return self._wide(lo, hi, bits) if len(self.raw) >= DESC_SIZE_64BIT else self.get(lo)

    def _set_pair(self, lo: str, hi: str, value: int, bits: int) -> None:
        if len(self.raw) >= DESC_SIZE_64BIT:
            self._set_wide(lo, hi, value, bits)
        elif value >> bits:
            raise ValueError(f"{lo} value {value} does not fit a 32-byte group descriptor")
        else:
            self.set(lo, value)

    @property
    def block_bitmap(self) -> int:
        return self._pair("bg_block_bitmap_lo", "bg_block_bitmap_hi", 32)

    @block_bitmap.setter
    def block_bitmap(self, value: int) -> None:
        self._set_pair("bg_block_bitmap_lo", "bg_block_bitmap_hi", value, 32)

    @property
    def inode_bitmap(self) -> int:
        return self._pair("bg_inode_bitmap_lo", "bg_inode_bitmap_hi", 32)

    @inode_bitmap.setter
    def inode_bitmap(self, value: int) -> None:
        self._set_pair("bg_inode_bitmap_lo", "bg_inode_bitmap_hi", value, 32)

    @property
    def inode_table(self) -> int:
        return self._pair("bg_inode_table_lo", "bg_inode_table_hi", 32)

    @inode_table.setter
    def inode_table(self, value: int) -> None:
        self._set_pair("bg_inode_table_lo", "bg_inode_table_hi", value, 32)

    @property
    def free_blocks(self) -> int:
        return self._pair("bg_free_blocks_count_lo", "bg_free_blocks_count_hi", 16)

    @free_blocks.setter
    def free_blocks(self, value: int) -> None:
        self._set_pair("bg_free_blocks_count_lo", "bg_free_blocks_count_hi", value, 16)

    @property
    def free_inodes(self) -> int:
        return self._pair("bg_free_inodes_count_lo", "bg_free_inodes_count_hi", 16)

    @free_inodes.setter
    def free_inodes(self, value: int) -> None:
        self._set_pair("bg_free_inodes_count_lo", "bg_free_inodes_count_hi", value, 16)

    @property
    def used_dirs(self) -> int:
        return self._pair("bg_used_dirs_count_lo", "bg_used_dirs_count_hi", 16)

    @used_dirs.setter
    def used_dirs(self, value: int) -> None:
        self._set_pair("bg_used_dirs_count_lo", "bg_used_dirs_count_hi", value, 16)

    @property
    def itable_unused(self) -> int:
        return self._pair("bg_itable_unused_lo", "bg_itable_unused_hi", 16)

    @itable_unused.setter
    def itable_unused(self, value: int) -> None:
        self._set_pair("bg_itable_unused_lo", "bg_itable_unused_hi", value, 16)


class Inode(_Fields):
    FIELDS: ClassVar[dict[str, tuple[int, str]]] = {
        "i_mode": (0x0, "H"),
        "i_uid": (0x2, "H"),
        "i_size_lo": (0x4, "I"),
        "i_atime": (0x8, "I"),
        "i_ctime": (0xC, "I"),
        "i_mtime": (0x10, "I"),
        "i_dtime": (0x14, "I"),
        "i_gid": (0x18, "H"),
        "i_links_count": (0x1A, "H"),
        "i_blocks_lo": (0x1C, "I"),
        "i_flags": (0x20, "I"),
        "i_file_acl_lo": (0x68, "I"),
        "i_size_high": (0x6C, "I"),
        "l_i_blocks_high": (0x74, "H"),
        "l_i_file_acl_high": (0x76, "H"),
        "l_i_uid_high": (0x78, "H"),
        "l_i_gid_high": (0x7A, "H"),
        "i_extra_isize": (0x80, "H"),
        "i_ctime_extra": (0x84, "I"),
        "i_mtime_extra": (0x88, "I"),
        "i_atime_extra": (0x8C, "I"),
        "i_crtime": (0x90, "I"),
        "i_crtime_extra": (0x94, "I"),
    }
    I_BLOCK_OFFSET: Final = 0x28
    EXTRA_OFFSET: Final = GOOD_OLD_INODE_SIZE
    # i_mode, i_uid, i_size_lo, i_atime, i_ctime, i_mtime, i_dtime, i_gid, i_links_count: set at once for speed.
    _HEAD: ClassVar[struct.Struct] = struct.Struct("<HHIIIIIHH")
    _ID_HIGH: ClassVar[struct.Struct] = struct.Struct("<HH")  # l_i_uid_high, l_i_gid_high at 0x78
    _TIMES_EXTRA: ClassVar[struct.Struct] = struct.Struct("<III")  # ctime, mtime, atime extra at 0x84

    @classmethod
    def new(cls, size: int, mode: int, uid: int, gid: int, seconds: int, nanoseconds: int) -> "Inode":
        """A fresh inode with one link, atime = ctime = mtime, and the extra fields e2fsprogs fills."""
        inode = cls(bytes(size))
        seconds, nanoseconds = clamp_time(seconds, nanoseconds, size >= GOOD_OLD_INODE_SIZE + EXTRA_ISIZE)
        low = seconds & 0xFFFFFFFF
        cls._HEAD.pack_into(inode.raw, 0, mode, uid & 0xFFFF, 0, low, low, low, 0, gid & 0xFFFF, 1)
        cls._ID_HIGH.pack_into(inode.raw, 0x78, uid >> 16, gid >> 16)
        if size >= GOOD_OLD_INODE_SIZE + EXTRA_ISIZE:
            inode.set("i_extra_isize", EXTRA_ISIZE)
            extra = encode_extra_time(seconds, nanoseconds)
            cls._TIMES_EXTRA.pack_into(inode.raw, 0x84, extra, extra, extra)
        return inode

    @property
    def mode(self) -> int:
        return self.get("i_mode")

    @property
    def file_type(self) -> int:
        return self.get("i_mode") & S_IFMT

    @property
    def size(self) -> int:
        return self._wide("i_size_lo", "i_size_high")

    @size.setter
    def size(self, value: int) -> None:
        self._set_wide("i_size_lo", "i_size_high", value)

    @property
    def uid(self) -> int:
        return self._wide("i_uid", "l_i_uid_high", 16)

    @uid.setter
    def uid(self, value: int) -> None:
        self._set_wide("i_uid", "l_i_uid_high", value, 16)

    @property
    def gid(self) -> int:
        return self._wide("i_gid", "l_i_gid_high", 16)

    @gid.setter
    def gid(self, value: int) -> None:
        self._set_wide("i_gid", "l_i_gid_high", value, 16)

    @property
    def blocks_512(self) -> int:
        """i_blocks in 512-byte units (huge_file without the HUGE_FILE flag)."""
        return self._wide("i_blocks_lo", "l_i_blocks_high")

    @blocks_512.setter
    def blocks_512(self, value: int) -> None:
        self._set_wide("i_blocks_lo", "l_i_blocks_high", value)

    @property
    def file_acl(self) -> int:
        return self._wide("i_file_acl_lo", "l_i_file_acl_high")

    @file_acl.setter
    def file_acl(self, value: int) -> None:
        self._set_wide("i_file_acl_lo", "l_i_file_acl_high", value)

    @property
    def links(self) -> int:
        return self.get("i_links_count")

    @links.setter
    def links(self, value: int) -> None:
        self.set("i_links_count", value)

    @property
    def flags(self) -> int:
        return self.get("i_flags")

    @flags.setter
    def flags(self, value: int) -> None:
        self.set("i_flags", value)

    @property
    def i_block(self) -> bytes:
        return bytes(self.raw[self.I_BLOCK_OFFSET : self.I_BLOCK_OFFSET + I_BLOCK_SIZE])

    @i_block.setter
    def i_block(self, value: bytes) -> None:
        self.raw[self.I_BLOCK_OFFSET : self.I_BLOCK_OFFSET + I_BLOCK_SIZE] = value.ljust(I_BLOCK_SIZE, b"\0")

    def has_extra(self, field_end: int) -> bool:
        """Whether the inode's extra area reaches `field_end` (an offset from the inode's start)."""
        return len(self.raw) > GOOD_OLD_INODE_SIZE and GOOD_OLD_INODE_SIZE + self.get("i_extra_isize") >= field_end

    def set_times(self, seconds: int, nanoseconds: int) -> None:
        """atime = ctime = mtime, with the extra fields' epoch bits and nanoseconds where the inode has them."""
        seconds, nanoseconds = clamp_time(seconds, nanoseconds, self.has_extra(0x90))
        low = seconds & 0xFFFFFFFF
        for name in ("i_atime", "i_ctime", "i_mtime"):
            self.set(name, low)
        if self.has_extra(0x90):
            extra = encode_extra_time(seconds, nanoseconds)
            for name in ("i_atime_extra", "i_ctime_extra", "i_mtime_extra"):
                self.set(name, extra)

    @property
    def mtime(self) -> tuple[int, int]:
        """(seconds, nanoseconds)."""
        low = self.get("i_mtime")
        if self.has_extra(0x8C):
            return decode_extra_time(low, self.get("i_mtime_extra"))
        return (low - (1 << 32) if low >= 1 << 31 else low), 0


# The kernel's range of ext4 times: signed 32-bit seconds, extended by 2 epoch bits when the inode has
# its extra fields (EXT4_EXTRA_TIMESTAMP_MAX); times outside are clamped, as the kernel clamps them.
TIME_MIN: Final = -(2**31)
TIME_MAX_NARROW: Final = 2**31 - 1
TIME_MAX_EXTRA: Final = 2**34 - 1 - 2**31


def clamp_time(seconds: int, nanoseconds: int, extra: bool) -> tuple[int, int]:
    """(seconds, nanoseconds) inside what an inode can store; nanoseconds are dropped when clamped."""
    high = TIME_MAX_EXTRA if extra else TIME_MAX_NARROW
    if seconds < TIME_MIN:
        return TIME_MIN, 0
    if seconds > high:
        return high, 0
    return seconds, nanoseconds


def encode_extra_time(seconds: int, nanoseconds: int) -> int:
    """The kernel's ext4_encode_extra_time: 2 epoch bits extend the signed 32-bit seconds, then nanoseconds."""
    signed_low = (seconds & 0xFFFFFFFF) - ((seconds & 0x80000000) << 1)
    epoch = ((seconds - signed_low) >> 32) & 0x3
    return epoch | (nanoseconds << 2)


def decode_extra_time(low: int, extra: int) -> tuple[int, int]:
    signed_low = low - ((low & 0x80000000) << 1)
    return signed_low + ((extra & 0x3) << 32), extra >> 2
