"""The read side of overlaybd images: look inside a converted image without mounting it.

- image.py: which images a layout's tags name, and their merged file system opened for reading;
- tree.py: a root file system as a comparable model; fstree.py: that model read from an image;
- source.py: that model built from the source's layer tars: the layer rules (layers/) on an in-memory tree;
- listing.py: ls and cat; extract.py, tarwriter.py, extract_dir.py: extract as a tar or as a directory;
- summary.py: inspect; verify.py, fsck.py: verify.
"""
