"""The OCI layer rules, written once and for any file system.

Applying a layer tar means the same thing whatever holds the result: whiteouts, opaque directories,
replaced entries, implicit parents, hard links and the symlink-safe path walk (image-spec layer.md;
overlaybd-formats.md §6.4 for what overlaybd-apply does). This package states those rules against a small
protocol (`tree.FileTree`: lookup, mkdir, create a file, symlink, link, mknod, remove, children, metadata,
xattrs) that the ext4 writer, the in-memory tree behind `verify --against` and any later file system
implement. It knows nothing of ext4, OCI or blobs.

- errors.py: what stops a layer or an entry; paths.py: entry names and the path walk inside an image;
- tree.py: the protocol, the metadata an entry gets and a regular file's contents;
- rules.py: applying one layer tar to a FileTree.
"""
