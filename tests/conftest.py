"""Shared test set-up: CPU-only by default, Triton through its interpreter, GPU tests marked ``cuda``."""
import os

import pytest
import torch

# Must precede any import of a Triton kernel module: without a GPU, kernels run in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("ACTRACK_BACKEND", None)


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: large shapes (B256 and up) on CPU")
    config.addinivalue_line("markers", "interpreter: Triton kernels on CPU tensors through the interpreter "
                                       "(skipped with a GPU, where the cuda tests run the compiled kernels)")


def pytest_collection_modifyitems(config, items):
    gpu = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="interpreter test: CPU only" if gpu else "needs a CUDA GPU")
    for item in items:
        if ("interpreter" if gpu else "cuda") in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread: per-frame ops on tiny models take microseconds, and OpenMP hand-offs cost more
    than the work (and stall badly on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def triton_on_cpu(monkeypatch):
    """Let the backend choose the Triton encoder on this CPU (the kernels run in the interpreter)."""
    from actrack_fast import backend  # here, not at the top: the interpreter setting must come first

    if torch.cuda.is_available():
        return
    monkeypatch.setitem(backend._PROVIDERS, "encoder_block", {})
    backend.register("encoder_block", "triton", lambda d: d.type == "cpu", "interpreter")
