"""Turn off oneDNN's primitive cache in processes that run the model over many batches (issue 12).

PyTorch's CPU convolutions run through oneDNN, which keeps the primitive built for each convolution,
direction and input shape, up to 1,024 of them. Our batches change shape at almost every step (the
real frames of a batch, sequence lengths), so the cache fills with primitives that are seldom used
again, and their small long-lived allocations land between each step's large tensors in glibc's heap,
which then cannot reuse the space those tensors freed: the heap grows with the number of steps.
Measured (a frame CNN trained on 2-8 frames of 64x64 RGB per sample, batch 32): peak RSS 1.86 GB
after 75 steps with the cache against 1.17 GB without it, of which glibc counted 0.8 GB free inside
the heap; plain conv2d forward and backward over 200 batch sizes grew 1.5 GB. Without the cache
every convolution call builds its primitive again, about 0.1-0.3 ms each: on the default experiment
(one torch thread) 90 steps took 5.4 against 5.05 s of CPU, about 4 ms (+7 %) a step, and peaked at
1.10 against 1.31-1.36 GB; on a GPU (cuDNN) nothing changes. ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 (the
default of oneDNN) keeps the cache where batch shapes repeat and memory is not the limit.

Other cures measured and not taken: a fixed glibc mmap threshold (MALLOC_MMAP_THRESHOLD_ or
MALLOC_TRIM_THRESHOLD_) keeps RSS flat too, but maps and faults every large tensor afresh: system time
of the same epoch 2.7 -> 12 s; `malloc_trim` after every step still grew and cost 6 s of system time.
"""

from __future__ import annotations

import os

CAPACITY = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def disable_primitive_cache() -> None:
    """Set the cache's capacity to 0 unless the user chose one; call it before the process's first
    convolution (oneDNN reads the variable once, when it builds its first primitive)."""
    if CAPACITY not in os.environ and "DNNL_PRIMITIVE_CACHE_CAPACITY" not in os.environ:  # older name
        os.environ[CAPACITY] = "0"
