"""The tar byte format: the ustar/PAX header (ustar.py) and a streaming reader of layer tars (reader.py).

Knows nothing of OCI or of file systems; the blob tar wrapper, the layer rules and `extract --tar` use it.
"""
