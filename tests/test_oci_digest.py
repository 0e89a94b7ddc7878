"""DiffID, ChainID and the ChainID-as-uuid rule, against the specs' values and the real tools' blobs."""

import pytest

from obdlayout.formats.blob import Blob
from obdlayout.oci.descriptor import Descriptor
from obdlayout.oci.digest import (
    BlobRef,
    chain_id_to_uuid,
    chain_ids,
    check_digest,
    diff_id,
    digest_bytes,
    encoded,
    layer_uuids,
)
from obdlayout.oci.layers import open_uncompressed
from obdlayout.oci.layout import Layout

from .shared import shared

# ../shared/data/README.md: the golden layer tars, their chain and the uuids overlaybd-commit was given.
LAYER1_DIFF_PREFIX = "sha256:d0c2a979"
LAYER2_DIFF_PREFIX = "sha256:621ac30f"
LAYER1_CHAIN_PREFIX = "sha256:01d4feca"
LAYER0_UUID = "d0c2a979-a603-cd1b-4c54-cde764294ccd"
LAYER1_UUID = "01d4feca-e826-4d7a-5ab7-26ed4e61d065"
# convertor-spec.md §2.3: hello-world's diff_id and the uuid the Go convertor derives from it.
HELLO_DIFF_ID = "sha256:01bb4fce3eb1b56b05adf99504dafd31907a5aadac736e36b27595c8b92f07f1"
HELLO_UUID = "01bb4fce-3eb1-b56b-05ad-f99504dafd31"
HELLO_LAYER = "sha256:719385e32844401d57ecfd3eacab360bf551a1491c05b85806ed8f1b08d792f6"


def test_chain_id_vector_from_image_spec() -> None:
    # ecosystem.md §1.8: image-spec identity/chainid_test.go.
    assert chain_ids(["sha256:a", "sha256:b"]) == [
        "sha256:a",
        "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8",
    ]


def test_chain_id_formula_three_layers() -> None:
    diffs = [digest_bytes(bytes([i])) for i in range(3)]
    chains = chain_ids(diffs)
    assert chains[0] == diffs[0]
    assert chains[1] == digest_bytes(f"{diffs[0]} {diffs[1]}".encode())
    assert chains[2] == digest_bytes(f"{chains[1]} {diffs[2]}".encode())
    assert chain_ids([]) == []


def test_golden_layer_tars_give_the_readme_diff_ids_chain_and_uuids() -> None:
    layers = shared("overlaybd-golden", "layers")
    with (layers / "layer1.tar").open("rb") as f1, (layers / "layer2.tar").open("rb") as f2:
        diffs = [diff_id(f1), diff_id(f2)]
    assert diffs[0].startswith(LAYER1_DIFF_PREFIX)
    assert diffs[1].startswith(LAYER2_DIFF_PREFIX)
    chains = chain_ids(diffs)
    assert chains[0] == diffs[0]
    assert chains[1].startswith(LAYER1_CHAIN_PREFIX)
    assert layer_uuids(chains) == [(LAYER0_UUID, None), (LAYER1_UUID, LAYER0_UUID)]


@pytest.mark.parametrize("layer", [0, 1])
def test_uuids_match_those_inside_the_real_committed_blobs(layer: int) -> None:
    """What overlaybd-commit --uuid/--parent-uuid wrote into the LSMT header is what we derive."""
    layers = shared("overlaybd-golden", "layers")
    with (layers / "layer1.tar").open("rb") as f1, (layers / "layer2.tar").open("rb") as f2:
        uuid, parent = layer_uuids(chain_ids([diff_id(f1), diff_id(f2)]))[layer]
    with Blob(shared("overlaybd-golden", "mkfs", f"layer{layer}", "overlaybd.commit")) as blob:
        info = blob.info()
    assert info.uuid.lower() == uuid
    assert info.parent_uuid.lower() == (parent or "00000000-0000-0000-0000-000000000000")


def test_hello_world_diff_id_computed_from_its_gzip_layer_and_its_uuid() -> None:
    layout = Layout(shared("hello-world"))
    layer = Descriptor.of("application/vnd.docker.image.rootfs.diff.tar.gzip", BlobRef(HELLO_LAYER, 2457))
    with open_uncompressed(layout, layer) as tar:
        assert diff_id(tar) == HELLO_DIFF_ID
    assert chain_id_to_uuid(HELLO_DIFF_ID) == HELLO_UUID


def test_digest_checks() -> None:
    good = digest_bytes(b"x")
    assert check_digest(good) == good
    assert check_digest("sha512:" + "ab" * 64).startswith("sha512:")  # other algorithms pass validation
    for bad in ["sha256:" + "A" * 64, "sha256:abc", "sha256", "", "SHA256:" + "a" * 64, 42]:
        with pytest.raises(ValueError, match="digest"):
            check_digest(bad)
    with pytest.raises(ValueError, match="unsupported algorithm"):
        encoded("sha512:" + "ab" * 64)
    assert encoded(good) == good[len("sha256:") :]
    with pytest.raises(ValueError, match="unsupported algorithm"):
        chain_id_to_uuid("sha512:" + "ab" * 64)
