"""What one grid-wide barrier of the persistent decode costs, by how it waits and by how many programs take
part: the decode at B = 1 is 33 dependent phases, so each 0.1 us a barrier saves is ~3 us a decode.

Designs (all bounded: a program that polls SPIN_LIMIT times gives up and raises the error flag):
- ``counter``: arrive with a release atomic on one counter, poll the same counter with acquire atomics
  (``kernels.decode._grid_barrier``, what the decode uses; Triton emits the polls as acquire loads);
- ``flag-atomic``: arrive with an acq_rel atomic on the counter; the last to arrive (the atomic returns the
  count before it) publishes the generation on a second word with a release exchange; the others poll that
  word through ``tl.atomic_add(..., 0, sem="acquire")`` (one thread per program), so polls no longer share an
  address with arrivals;
- ``flag-load``: as ``flag-atomic``, every thread polling with an inline ``ld.acquire.gpu`` load.
Each time is the median CUDA-graph replay of one launch of ``count`` barriers; the per-barrier cost is the
slope between 1 and 33 barriers. Run on a GPU: ``python benchmarks/probe_grid_barrier.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from actrack_fast.cuda_graphs import graph_median_us
from kernels import decode as kernels

ROUNDS = 50
DESIGNS = ("counter", "flag-atomic", "flag-load")


@triton.jit
def _read_flag(ptr, LOAD_POLLS: tl.constexpr):
    if LOAD_POLLS:
        return tl.inline_asm_elementwise("ld.acquire.gpu.global.u32 $0, [$1];", "=r,l", [ptr], dtype=tl.int32,
                                         is_pure=False, pack=1)
    return tl.atomic_add(ptr, 0, sem="acquire", scope="gpu")


@triton.jit
def _barrier_flag(sync_ptr, generation, nprog, LOAD_POLLS: tl.constexpr):
    tl.debug_barrier()
    before = tl.atomic_add(sync_ptr, 1, sem="acq_rel", scope="gpu")
    if before == generation * nprog - 1:
        tl.atomic_xchg(sync_ptr + 3, generation, sem="release", scope="gpu")
    seen = _read_flag(sync_ptr + 3, LOAD_POLLS)
    polls = seen * 0
    while (seen < generation) & (polls < kernels.SPIN_LIMIT):
        seen = _read_flag(sync_ptr + 3, LOAD_POLLS)
        polls += 1
    if seen < generation:
        tl.atomic_xchg(sync_ptr + 2, 1)
    tl.debug_barrier()


@triton.jit
def _barriers(sync_ptr, count, DESIGN: tl.constexpr):
    nprog = tl.num_programs(0)
    for i in range(count):
        if DESIGN == 0:
            kernels._grid_barrier(sync_ptr, (i + 1) * nprog)
        else:
            _barrier_flag(sync_ptr, i + 1, nprog, DESIGN == 2)


def barrier_us(design: str, count: int, programs: int, warps: int) -> float:
    """Median us of one launch of ``count`` barriers over ``programs`` programs (counters reset in-graph)."""
    sync = torch.zeros(4, dtype=torch.int32, device="cuda")

    def run():
        sync.zero_()
        _barriers[(programs,)](sync, count, DESIGNS.index(design), num_warps=warps)
    us = graph_median_us(run, ROUNDS)
    torch.cuda.synchronize()
    assert int(sync[2]) == 0, f"{design}: a barrier gave up waiting"
    return us


def main() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}\n")
    print("| design | programs x warps | 1 barrier us | 33 barriers us | per extra barrier us |")
    print("|---|---|--:|--:|--:|")
    for programs, warps in ((sms, 8), (2 * sms, 4), (sms // 2, 8), (sms // 4, 8), (16, 8)):
        for design in DESIGNS:
            one, many = barrier_us(design, 1, programs, warps), barrier_us(design, 33, programs, warps)
            print(f"| {design} | {programs} x {warps} | {one:.1f} | {many:.1f} | {(many - one) / 32:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
