"""What PyTorch's CUDA caching allocator will report for a load: `torch.cuda.memory_allocated` and
`torch.cuda.memory_reserved`, predicted from the list of tensor storages the load creates. Pure Python.

The rules mirror c10/cuda/CUDACachingAllocator.cpp (pytorch/pytorch, read at commit 001074d2; the
constants and functions named below are that file's):
- A request of 0 bytes never reaches the allocator (`NativeCachingAllocator::allocate`: `if (size != 0)
  malloc(...)`), so an empty storage counts 0.
- `round_size`: every request is rounded up to a multiple of kMinBlockSize = 512 bytes.
- `get_pool`: rounded requests <= kSmallSize (1 MiB) use the small pool, larger ones the large pool.
- `get_free_block`: best fit, the smallest cached free block of the pool with size >= the request
  (ties: lowest address; `BlockComparatorSize` orders by stream, size, address).
- `get_allocation_size`: with no block to reuse, cudaMalloc a segment of kSmallBuffer = 2 MiB for a
  small request, kLargeBuffer = 20 MiB for a request under kMinLargeAlloc = 10 MiB, else the request
  rounded up to kRoundLarge = 2 MiB. `memory_reserved` is the sum of segments.
- `should_split`: a small block is split when >= 512 bytes would remain; a large block only when more
  than kSmallSize (1 MiB) would remain. An unsplit block is handed out whole and `memory_allocated`
  counts the whole block (`alloc_found_block` adds `block->size`), not the request.
- `free_block` / `try_merge_blocks`: a freed block merges with free neighbours of its segment and
  returns to its pool; segments are not given back to CUDA (no `empty_cache`).

Not modelled: PYTORCH_CUDA_ALLOC_CONF (expandable_segments, max_split_size_mb,
roundup_power2_divisions, garbage_collection_threshold; the defaults are assumed), the cudaMallocAsync
backend, several streams, CUDA graphs, out-of-memory retries (which release cached segments), and
cudaMalloc's real addresses (only the order between equal-size free blocks depends on them).
`predict` plays a list of storages with no frees; `play` plays named allocations and frees (the load
sequence qcli.plan.storages.load_events writes down).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass

MIB = 1 << 20
MIN_BLOCK_BYTES = 512  # kMinBlockSize: all sizes are rounded to at least 512 bytes
SMALL_SIZE_BYTES = 1 * MIB  # kSmallSize: largest "small" allocation
SMALL_BUFFER_BYTES = 2 * MIB  # kSmallBuffer: small allocations are packed in 2 MiB segments
LARGE_BUFFER_BYTES = 20 * MIB  # kLargeBuffer: 1-10 MiB requests get a 20 MiB segment
MIN_LARGE_ALLOC_BYTES = 10 * MIB  # kMinLargeAlloc: from here a request gets a segment of its own
ROUND_LARGE_BYTES = 2 * MIB  # kRoundLarge: large segments are rounded up to 2 MiB

RESERVED_RULE = (
    "predicted: each storage rounded up to 512 B; requests <= 1 MiB packed into 2 MiB segments, "
    "1-10 MiB into 20 MiB segments, larger ones rounded up to 2 MiB; best-fit reuse in load order "
    "(PyTorch CUDACachingAllocator defaults, no PYTORCH_CUDA_ALLOC_CONF)"
)


def round_size(nbytes: int) -> int:
    """Return the block size the allocator hands out for a request of `nbytes` (0 for an empty storage)."""
    if nbytes <= 0:
        return 0
    return max(MIN_BLOCK_BYTES, -(-nbytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES)


def is_small(block_bytes: int) -> bool:
    """Return True when a rounded request belongs to the small pool (get_pool)."""
    return block_bytes <= SMALL_SIZE_BYTES


def segment_bytes(block_bytes: int) -> int:
    """Return the cudaMalloc size for a rounded request that no cached block can serve (get_allocation_size)."""
    if block_bytes <= SMALL_SIZE_BYTES:
        return SMALL_BUFFER_BYTES
    if block_bytes < MIN_LARGE_ALLOC_BYTES:
        return LARGE_BUFFER_BYTES
    return -(-block_bytes // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


def should_split(block_bytes: int, request_bytes: int, small: bool) -> bool:
    """Return True when the allocator splits a free block to serve a request (should_split, default config)."""
    remaining = block_bytes - request_bytes
    return remaining >= MIN_BLOCK_BYTES if small else remaining > SMALL_SIZE_BYTES


@dataclass(eq=False)
class _Block:
    address: int
    size: int
    small: bool
    allocated: bool = False
    prev: _Block | None = None
    next: _Block | None = None


class CachingAllocator:
    """A model of one device's caching allocator on one stream: malloc/free with its split and merge rules."""

    def __init__(self) -> None:
        self._pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # small? -> sorted (size, address)
        self._free: dict[int, _Block] = {}
        self._live: dict[int, _Block] = {}
        self._next_address = 0
        self.allocated_bytes = 0
        self.reserved_bytes = 0
        self.peak_allocated_bytes = 0
        self.segments = {True: 0, False: 0}
        self.unsplit_large_blocks = 0

    def malloc(self, nbytes: int) -> int | None:
        """Return the address of a new block for `nbytes` (None for 0 bytes, which allocates nothing)."""
        size = round_size(nbytes)
        if size == 0:
            return None
        small = is_small(size)
        pool = self._pools[small]
        i = bisect_left(pool, (size, -1))
        if i < len(pool):
            _, address = pool.pop(i)
            block = self._free.pop(address)
        else:
            seg = segment_bytes(size)
            block = _Block(self._next_address, seg, small)
            self._next_address += seg
            self.reserved_bytes += seg
            self.segments[small] += 1
        if should_split(block.size, size, small):
            rest = _Block(block.address + size, block.size - size, small, prev=None, next=block.next)
            block.size = size
            if rest.next is not None:
                rest.next.prev = rest
            block.next, rest.prev = rest, block
            self._release(rest)
        elif not small and block.size > size:
            self.unsplit_large_blocks += 1
        block.allocated = True
        self._live[block.address] = block
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block.address

    def free(self, address: int | None) -> None:
        """Return a block to its pool, merged with free neighbours of its segment."""
        if address is None:
            return
        block = self._live.pop(address)
        block.allocated = False
        self.allocated_bytes -= block.size
        for side in (block.prev, block.next):
            if side is not None and not side.allocated:
                pool = self._pools[side.small]
                pool.pop(bisect_left(pool, (side.size, side.address)))
                del self._free[side.address]
                if side is block.prev:
                    block.address, block.prev = side.address, side.prev
                    if side.prev is not None:
                        side.prev.next = block
                else:
                    block.next = side.next
                    if side.next is not None:
                        side.next.prev = block
                block.size += side.size
        self._release(block)

    def _release(self, block: _Block) -> None:
        self._free[block.address] = block
        insort(self._pools[block.small], (block.size, block.address))


Event = tuple[str, str, int]  # ("alloc", key, bytes) or ("free", key, 0)


def play(events: Iterable[Event]) -> CachingAllocator:
    """Return the allocator model after a sequence of named allocations and frees."""
    alloc = CachingAllocator()
    live: dict[str, int | None] = {}
    for action, key, nbytes in events:
        if action == "alloc":
            live[key] = alloc.malloc(nbytes)
        else:
            alloc.free(live.pop(key))
    return alloc


@dataclass(frozen=True)
class CudaPrediction:
    """What the caching allocator will report once a list of storages is allocated (no frees)."""

    allocated_bytes: int
    reserved_bytes: int
    storages: int
    small_segments: int
    large_segments: int
    unsplit_large_blocks: int  # large blocks handed out whole: allocated counts their slack too
    rule: str = RESERVED_RULE


def predict(storage_bytes: Iterable[int]) -> CudaPrediction:
    """Return allocated and reserved bytes after allocating each storage in order, none freed."""
    alloc = CachingAllocator()
    count = 0
    for nbytes in storage_bytes:
        alloc.malloc(nbytes)
        count += 1
    return CudaPrediction(
        allocated_bytes=alloc.allocated_bytes,
        reserved_bytes=alloc.reserved_bytes,
        storages=count,
        small_segments=alloc.segments[True],
        large_segments=alloc.segments[False],
        unsplit_large_blocks=alloc.unsplit_large_blocks,
    )


def allocated_lower_bound(storage_bytes: Iterable[int]) -> int:
    """Return the sum of the 512-byte-rounded storages: memory_allocated whenever no large block is handed out
    whole."""
    return sum(round_size(n) for n in storage_bytes)


def reserved_lower_bound(storage_bytes: Iterable[int]) -> int:
    """Return the least reserved memory any allocation order could give: each pool's blocks packed without gaps
    into whole segments."""
    sizes = [round_size(n) for n in storage_bytes]
    small = sum(s for s in sizes if s and is_small(s))
    large = sum(s for s in sizes if s and not is_small(s))
    return -(-small // SMALL_BUFFER_BYTES) * SMALL_BUFFER_BYTES + -(-large // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


def transient_headroom(transient_bytes: Iterable[int]) -> int:
    """Return the reserved memory that tensors freed during a load may leave cached: one segment per distinct
    rounded size (a freed block is reused by the next request of its size, so each size needs one segment)."""
    return sum(segment_bytes(s) for s in {round_size(n) for n in transient_bytes} if s)
