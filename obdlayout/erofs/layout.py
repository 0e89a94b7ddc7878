"""EROFS on disk: the superblock, inodes, dirents and xattr entries as named constants and structs
(erofs-format.md §2-§7; the kernel's include/uapi erofs_fs.h). All integers are little-endian.

TurboOCI's choices (erofs-format.md §1, §2): 4096-byte blocks, metadata and data in one block address space
from block 0 (meta_blkaddr 0, so a nid is its inode's byte offset / 32), no feature bits, build time 0.
"""

import stat
import struct
from typing import Final

BLOCK_SIZE: Final = 4096
BLOCK_SIZE_BITS: Final = 12
SUPERBLOCK_OFFSET: Final = 1024  # §2: bytes 0..1023 are zero
MAGIC: Final = 0xE0F5E1E2
SLOT_SIZE: Final = 32  # §1.6: inodes start on 32-byte slots; nid = byte offset // SLOT_SIZE
NULL_ADDR: Final = 0xFFFFFFFF  # §3.5: raw_blkaddr of a FLAT_INLINE inode with no full blocks

# §2 superblock, 128 bytes at SUPERBLOCK_OFFSET: magic, checksum, feature_compat, blkszbits, sb_extslots,
# root_nid, inos, build_time, build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr, uuid, volume_name,
# feature_incompat, u1, extra_devices, devt_slotoff, dirblkbits, xattr_prefix_count, xattr_prefix_start,
# packed_nid, xattr_filter_reserved, reserved.
SUPERBLOCK: Final = struct.Struct("<IIIBBHQQIIII16s16sIHHHBBIQB23x")
assert SUPERBLOCK.size == 128

# §3.1 i_format: bit 0 the layout version, bits 1-3 the data layout.
FORMAT_EXTENDED: Final = 1
LAYOUT_SHIFT: Final = 1
FLAT_PLAIN: Final = 0
FLAT_INLINE: Final = 2
CHUNK_BASED: Final = 4
KNOWN_FORMAT_BITS: Final = 0xF

# §3.2 compact inode (32 bytes): i_format, i_xattr_icount, i_mode, i_nlink, i_size, reserved, i_u, i_ino,
# i_uid, i_gid, reserved.
COMPACT_INODE: Final = struct.Struct("<HHHHI4xIIHH4x")
# §3.3 extended inode (64 bytes): i_format, i_xattr_icount, i_mode, reserved, i_size, i_u, i_ino, i_uid,
# i_gid, i_mtime, i_mtime_nsec, i_nlink, reserved.
EXTENDED_INODE: Final = struct.Struct("<HHH2xQIIIIqII16x")  # i_mtime signed, as the kernel reads it
assert COMPACT_INODE.size == 32 and EXTENDED_INODE.size == 64
INODE_HEAD: Final = struct.Struct("<HH")
COMPACT_NLINK: Final = 6  # i_nlink's offset: u16 in a compact inode, u32 in an extended one
EXTENDED_NLINK: Final = 44  # i_format, i_xattr_icount: the same in both layouts
COMPACT_LIMIT: Final = 0xFFFF  # §3.4: uid, gid, nlink of a compact inode
COMPACT_SIZE_LIMIT: Final = 0xFFFFFFFF

# §5.1 dirent: nid, nameoff, file_type, reserved.
DIRENT: Final = struct.Struct("<QHBx")
MAX_NAME_LEN: Final = 255
FILE_TYPE_OF_KIND: Final = {
    stat.S_IFREG: 1,
    stat.S_IFDIR: 2,
    stat.S_IFCHR: 3,
    stat.S_IFBLK: 4,
    stat.S_IFIFO: 5,
    stat.S_IFSOCK: 6,
    stat.S_IFLNK: 7,
}
MAX_FILE_TYPE: Final = 7

# §7.1 inline xattr area: header (h_name_filter, h_shared_count, reserved), then entries (§7.2):
# e_name_len, e_name_index, e_value_size, name, value, padded to 4 bytes.
XATTR_HEADER: Final = struct.Struct("<IB7x")
XATTR_ENTRY: Final = struct.Struct("<BBH")
MAX_XATTR_VALUE: Final = 0xFFFF
MAX_XATTR_ICOUNT: Final = 0xFFFF
# §7.2: name indexes, a prefix stripped from the name; 2 and 3 are whole names (the POSIX ACLs).
XATTR_PREFIXES: Final = {1: "user.", 4: "trusted.", 6: "security."}
XATTR_WHOLE_NAMES: Final = {2: "system.posix_acl_access", 3: "system.posix_acl_default"}

# §7.5: the first layer's root keeps 16 KiB for xattrs, so that later layers can write their root into the
# same slot (root_nid is 16 bits: a new root far into the image could not be named).
ROOT_OFFSET: Final = SUPERBLOCK_OFFSET + SUPERBLOCK.size
ROOT_NID: Final = ROOT_OFFSET // SLOT_SIZE
ROOT_XATTR_SIZE: Final = 16384
ROOT_SLOT_END: Final = ROOT_OFFSET + EXTENDED_INODE.size + ROOT_XATTR_SIZE


def xattr_area_size(icount: int) -> int:
    """§7.1: the inline xattr area's size for an i_xattr_icount."""
    return 0 if icount == 0 else XATTR_HEADER.size + 4 * (icount - 1)


def xattr_icount(area_size: int) -> int:
    return 0 if area_size == 0 else (area_size - XATTR_HEADER.size) // 4 + 1


def encode_rdev(major: int, minor: int) -> int:
    """§3.5: Linux's new_encode_dev."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_rdev(rdev: int) -> tuple[int, int]:
    return (rdev & 0xFFF00) >> 8, (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
