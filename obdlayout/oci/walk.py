"""The one walk over a layout's indexes: from some descriptors down through indexes to what they name.

Used by the plan (what to convert), the read side (which images a tag names) and the layout itself
(finding a digest). Every index is read once and every digest visited once, however many indexes name
it: a small layout whose indexes name the same child index many times over would otherwise take time
exponential in its depth. Nested indexes are followed down to MAX_INDEX_DEPTH levels.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .descriptor import Descriptor
from .documents import Index
from .errors import LayoutError
from .mediatypes import ATTESTATION_MANIFEST, INDEX_TYPES, REFERENCE_TYPE

# Real images nest indexes two or three deep; beyond this a layout is taken as hostile.
MAX_INDEX_DEPTH = 16
# Distinct descriptors one walk visits: bounds the documents a hostile layout makes us read.
MAX_DESCRIPTORS = 100_000


def is_attestation(descriptor: Descriptor) -> bool:
    """A BuildKit attestation manifest, by the Go convertor's test: the annotation alone; an unknown/unknown
    platform without it does not count (convertor-spec.md §2.1, §6)."""
    return descriptor.annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


@dataclass(frozen=True)
class Visit:
    descriptor: Descriptor
    parents: tuple[Descriptor, ...]  # the indexes above it, top first


class IndexWalker:
    """`read_index` reads and checks an index blob (Layout.read_index). With `skip_attestations`, attestation
    manifests are left out of every index, each one told to `on_skip(index, entry)` once."""

    def __init__(
        self,
        read_index: Callable[[Descriptor], Index],
        *,
        skip_attestations: bool = True,
        on_skip: Callable[[Descriptor, Descriptor], None] | None = None,
    ) -> None:
        self._read_index = read_index
        self._skip = skip_attestations
        self._on_skip = on_skip
        self._indexes: dict[str, Index] = {}
        self._children: dict[str, tuple[Descriptor, ...]] = {}

    def index(self, descriptor: Descriptor) -> Index:
        """The index `descriptor` names, read once."""
        known = self._indexes.get(descriptor.digest)
        if known is None:
            known = self._indexes[descriptor.digest] = self._read_index(descriptor)
        return known

    def children(self, index: Descriptor, depth: int = 0) -> tuple[Descriptor, ...]:
        """The entries of the index `index`, at nesting `depth` below the walk's start (0: a root)."""
        known = self._children.get(index.digest)
        if known is not None:
            return known
        if depth >= MAX_INDEX_DEPTH:
            raise LayoutError(index.digest, f"indexes nest more than {MAX_INDEX_DEPTH} levels deep")
        kept: list[Descriptor] = []
        for entry in self.index(index).manifests:
            if self._skip and is_attestation(entry):
                if self._on_skip is not None:
                    self._on_skip(index, entry)
                continue
            kept.append(entry)
        self._children[index.digest] = found = tuple(kept)
        return found

    def walk(
        self,
        roots: Iterable[Descriptor],
        *,
        breadth_first: bool = False,
        on_error: Callable[[LayoutError], None] | None = None,
    ) -> Iterator[Visit]:
        """Every descriptor reachable from `roots` through indexes (not into manifests), each digest once:
        depth first in index order (as a tag's images are listed), or breadth first (nearest first).
        An index that cannot be read is raised, or, given `on_error`, handed to it and not descended into."""
        pending = deque(Visit(root, ()) for root in roots)
        seen: set[str] = set()
        while pending:
            visit = pending.popleft()
            descriptor = visit.descriptor
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            if len(seen) > MAX_DESCRIPTORS:
                raise LayoutError(descriptor.digest, f"the indexes name more than {MAX_DESCRIPTORS} descriptors")
            yield visit
            if descriptor.media_type not in INDEX_TYPES:
                continue
            try:
                entries = self.children(descriptor, len(visit.parents))
            except LayoutError as exc:
                if on_error is None:
                    raise
                on_error(exc)
                continue
            below = [Visit(entry, (*visit.parents, descriptor)) for entry in entries]
            if breadth_first:
                pending.extend(below)
            else:
                pending.extendleft(reversed(below))
