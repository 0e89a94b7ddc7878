"""The conversion pipeline: OCI layers in, overlaybd layer blobs out."""
