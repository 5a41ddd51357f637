"""Malloc settings for image loops and nets (glibc only; elsewhere nothing changes).

Per image, decode and resize allocate and free buffers of a few hundred KB. glibc gives
the top of the heap back to the system whenever about 1 MB lies free there, and the next
image faults it in again page by page (docs/performance.md says what that cost). Fixed
thresholds keep up to 64 MB of freed memory for reuse instead; memory
still does not grow with the number of images. A net's blobs and columns are freed and
allocated again every iteration: blocks up to 32 MB (glibc's largest threshold) come from
the heap too, not from a fresh mapping (CaffeNet's forward-backward: a third of the page
faults, the whole `time` command 5% faster). A training net faults its pass's memory in
at set-up (``fault_in``).
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
MMAP_COUNT = 65536  # glibc's default number of separately mapped blocks
TRIM_BYTES = 64 << 20
MMAP_BYTES = 32 << 20  # glibc's largest; larger blocks are still mapped and unmapped on their own
NET_TRIM_BYTES = 1 << 30  # a net's freed blobs kept for its next pass (its working set)


def keep_freed_memory(nets: bool = False) -> bool:
    """Set the thresholds in this process (forked children inherit them); False where the
    C library is not glibc. ``nets``: for a process that runs a net, whose working set is
    the same every pass: blocks of any size come from the heap (none mapped on its own)
    and up to NET_TRIM_BYTES stay there when freed, so a pass reuses the last pass's pages
    (ResNet-50's forward at batch 32: page faults 12 K -> 0.9 K a pass, 2.26 -> 2.03 s;
    CaffeNet's forward-backward 3 to 5% faster; peak memory within 5%)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others
        return False
    if nets:
        return bool(mallopt(_M_TRIM_THRESHOLD, NET_TRIM_BYTES)) and bool(mallopt(_M_MMAP_MAX, 0))
    # an image loop maps its largest blocks again (a worker forked from a training process too)
    settings = ((_M_TRIM_THRESHOLD, TRIM_BYTES), (_M_MMAP_THRESHOLD, MMAP_BYTES), (_M_MMAP_MAX, MMAP_COUNT))
    return all([bool(mallopt(option, value)) for option, value in settings])


def fault_in(nbytes: int) -> None:
    """Fault ``nbytes`` of heap in now, as one block, and free it, for a process whose
    heap keeps what it frees (``keep_freed_memory(nets=True)``): a training net's passes
    then take pages that are already there. Left to the passes, the heap settles over the
    first three (blobs freed and allocated in a new order each pass until their places
    repeat), and each fresh page faults in then; NumPy asks for huge pages for its large
    blocks, and compacting memory for one took up to 4 ms on the 2-core machine. One block
    also comes in as huge pages throughout, where pieces fault in as small pages under
    the small blocks first: CaffeNet's forward-backward at batch 32, passes 3 to 5, 736,
    748, 754 -> 712, 683, 722 ms (three interleaved pairs of processes), its second and
    third passes with no page faulted in (29 huge pages before), RSS 1001 -> 1078 MB."""
    import numpy as np

    block = np.empty(min(nbytes, NET_TRIM_BYTES), np.uint8)
    block[::4096] = 0  # a byte a page
    del block
