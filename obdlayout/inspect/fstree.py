"""The tree model (tree.py) of an image's file system: every path, contents hashed as they stream by."""

import hashlib
import stat

from .readfs import EntryView, ImageFs
from .tree import Node, Tree, display


def image_tree(fs: ImageFs, contents: bool = True) -> Tree:
    """The whole tree; without `contents` regular files are not read (sha256 stays None)."""
    tree: Tree = {}
    by_inode: dict[int, Node] = {}  # non-directories, so that hard links share one record
    for entry in fs.walk(fs.root):
        path = b"/".join(entry.path)
        known = by_inode.get(entry.ino)
        if known is None:
            known = node_of(fs, entry, contents)
            if known.kind != stat.S_IFDIR:
                by_inode[entry.ino] = known
        tree[path] = known
    return tree


def node_of(fs: ImageFs, entry: EntryView, contents: bool = True) -> Node:
    inode = entry.inode
    where = display(b"/".join(entry.path))
    kind = inode.file_type
    node = Node(
        kind=kind,
        mode=inode.mode & 0o7777,
        uid=inode.uid,
        gid=inode.gid,
        mtime=inode.mtime,
        xattrs=fs.xattrs(inode, where),
    )
    if kind == stat.S_IFREG:
        node.size = inode.size
        if contents:
            hasher = hashlib.sha256()
            for chunk in fs.iter_data(inode, where):
                hasher.update(chunk)
            node.sha256 = hasher.hexdigest()
    elif kind == stat.S_IFLNK:
        node.target = fs.symlink_target(entry.ino)
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        node.rdev = fs.device_numbers(inode)
    return node
