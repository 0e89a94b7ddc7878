"""The OCI side of the converter: read image layouts, plan a conversion, write the converted manifests.

Knows nothing of ext4 or of the overlaybd byte formats. Facts: shared/specs/convertor-spec.md §1-3, §5, §8
and shared/specs/ecosystem.md §1-2, §6.

- mediatypes.py: media types, annotation keys, artifact types;
- digest.py: digests, DiffIDs, ChainIDs, a ChainID as an LSMT uuid;
- gojson.py: JSON parsed strictly and written as the Go convertor writes it;
- descriptor.py, documents.py: descriptors, platforms, indexes and manifests as read;
- layout.py: reading a layout, every blob verified; writer.py: writing one safely;
- layers.py: a source layer as its uncompressed tar;
- plan.py: what to convert; output.py: the converted configs, manifests and indexes, and publishing them.
"""
