"""Media types, annotation keys and artifact types the converter reads and writes.

Sources: ecosystem.md §1.5-§1.7 (OCI and Docker types, their mapping) and convertor-spec.md §3.1, §3.3, §3.6
(what the Go convertor emits).
"""

from enum import Enum

# OCI image-spec v1.1 (ecosystem.md §1.5, §1.6).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Deprecated in v1.1 but still to be read (ecosystem.md §1.7).
OCI_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2 schema 2 (ecosystem.md §1.6).
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"  # containerd's, not an official Docker type
DOCKER_FOREIGN_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Legacy schema 1: containerd does not treat it as a manifest; rejected with a clear error (ecosystem.md §1.6).
DOCKER_SCHEMA1_MANIFESTS = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Encrypted layers (ocicrypt) carry this suffix on any layer type; they cannot be converted.
ENCRYPTED_SUFFIX = "+encrypted"


class Compression(Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


# Every layer type that holds a (possibly compressed) tar the converter can apply.
LAYER_COMPRESSION = {
    OCI_LAYER_TAR: Compression.NONE,
    OCI_LAYER_GZIP: Compression.GZIP,
    OCI_LAYER_ZSTD: Compression.ZSTD,
    OCI_NONDIST_TAR: Compression.NONE,
    OCI_NONDIST_GZIP: Compression.GZIP,
    OCI_NONDIST_ZSTD: Compression.ZSTD,
    DOCKER_LAYER_TAR: Compression.NONE,
    DOCKER_LAYER_GZIP: Compression.GZIP,
    DOCKER_LAYER_ZSTD: Compression.ZSTD,
    DOCKER_FOREIGN_TAR: Compression.NONE,
    DOCKER_FOREIGN_GZIP: Compression.GZIP,
}
NON_DISTRIBUTABLE_LAYERS = frozenset(
    {OCI_NONDIST_TAR, OCI_NONDIST_GZIP, OCI_NONDIST_ZSTD, DOCKER_FOREIGN_TAR, DOCKER_FOREIGN_GZIP}
)

# The one annotation of index.json entries: the tag (ecosystem.md §1.2).
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"  # `imageLayoutVersion` of the oci-layout file (ecosystem.md §1.1)

# BuildKit attestation manifests in an index: the Go convertor drops them on this annotation alone; a platform
# of unknown/unknown without it does not count (convertor-spec.md §2.1, §6).
REFERENCE_TYPE = "vnd.docker.reference.type"
ATTESTATION_MANIFEST = "attestation-manifest"

# Overlaybd layer annotations (convertor-spec.md §3.3; pkg/label/label.go in accelerated-container-image).
OVERLAYBD_ANNOTATION_PREFIX = "containerd.io/snapshot/overlaybd/"
OVERLAYBD_BLOB_DIGEST = OVERLAYBD_ANNOTATION_PREFIX + "blob-digest"
OVERLAYBD_BLOB_SIZE = OVERLAYBD_ANNOTATION_PREFIX + "blob-size"
OVERLAYBD_VERSION = OVERLAYBD_ANNOTATION_PREFIX + "version"
# Set by the embedded convertor only; the userspace convertor, and so this tool, never emits it (§3.3).
OVERLAYBD_BLOB_FS_TYPE = OVERLAYBD_ANNOTATION_PREFIX + "blob-fs-type"
OVERLAYBD_VERSION_VALUE = "0.1.0"  # native overlaybd layers and baselayers (pkg/version/version.go)
TURBO_VERSION_VALUE = "0.1.0-turbo.ociv1"  # TurboOCI layers (§3.3)
# TurboOCI layers name the original layer blob their file data lies in (§3.3).
TURBO_TARGET_DIGEST = OVERLAYBD_ANNOTATION_PREFIX + "turbo-oci/target-digest"
TURBO_TARGET_MEDIA_TYPE = OVERLAYBD_ANNOTATION_PREFIX + "turbo-oci/target-media-type"

# `artifactType` of converted manifests and indexes under --referrer (convertor-spec.md §3.1, §3.6).
ARTIFACT_TYPE_OVERLAYBD = "application/vnd.containerd.overlaybd.native.v1+json"
ARTIFACT_TYPE_TURBO = "application/vnd.containerd.overlaybd.turbo.v1+json"


def is_encrypted(media_type: str) -> bool:
    return media_type.endswith(ENCRYPTED_SUFFIX)
