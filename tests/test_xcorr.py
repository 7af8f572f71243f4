"""The compiled correlation op (csrc/, backend ``"cuda"``) against the grouped-conv reference.

CPU tests run the extension's C++ kernels (CI builds it); GPU tests (``cuda`` marker) run its CUDA kernels
in float32/float16/bfloat16. Ground truth is the reference in float64 on the same (rounded) inputs. The shape
sweep samples B 1..64, C 8..256, kernels 1..8 and search maps 4..32, odd and even, both paddings, plus the
shape ACTrack-B256 uses (96 channels, 16x16 search, 4x4 kernel).
"""
import os
import subprocess
import sys

import pytest
import torch

from actrack_fast import backend, xcorr_op
from actrack_fast.correlation import xcorr_depthwise, xcorr_depthwise_reference

if xcorr_op._C is None and os.environ.get("ACTRACK_NO_EXT") == "1":
    pytest.skip("the extension was skipped on purpose (ACTRACK_NO_EXT=1)", allow_module_level=True)

op = torch.ops.actrack_fast.xcorr_depthwise
op_backward = torch.ops.actrack_fast.xcorr_depthwise_backward

# (B, C, H, W, h, w, padding)
SWEEP = [
    (1, 8, 4, 4, 1, 1, "same"),
    (2, 96, 16, 16, 4, 4, "same"),
    (3, 16, 5, 7, 2, 3, "same"),
    (64, 8, 9, 8, 3, 3, "valid"),
    (1, 256, 12, 10, 8, 5, "same"),
    (4, 24, 32, 31, 7, 8, "valid"),
    (2, 40, 32, 32, 6, 6, "same"),
    (5, 12, 17, 23, 8, 8, "same"),
    (8, 32, 8, 8, 8, 8, "valid"),
    (16, 8, 6, 11, 5, 2, "valid"),
]
SWEEP_IDS = ["B{}C{}_{}x{}_k{}x{}_{}".format(*case) for case in SWEEP]
GRADCHECK = [(2, 3, 7, 6, 4, 3, "same"), (1, 2, 6, 5, 2, 2, "same"), (2, 2, 5, 6, 3, 4, "valid")]
TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float64: (1e-12, 1e-12), torch.float16: (2e-3, 2e-3),
             torch.bfloat16: (1e-2, 1e-2)}


def make_inputs(case, dtype=torch.float32, device="cpu", requires_grad=False):
    B, C, H, W, h, w, padding = case
    search = torch.randn(B, C, H, W, device=device).to(dtype).requires_grad_(requires_grad)
    kernel = torch.randn(B, C, h, w, device=device).to(dtype).requires_grad_(requires_grad)
    return search, kernel, padding


def reference_with_grads(search, kernel, padding, grad_output):
    """The reference output and gradients in float64 on CPU, from the same (possibly rounded) inputs."""
    s = search.detach().double().cpu().requires_grad_()
    k = kernel.detach().double().cpu().requires_grad_()
    out = xcorr_depthwise_reference(s, k, padding)
    out.backward(grad_output.double().cpu())
    return out.detach(), s.grad, k.grad


def assert_matches_reference(case, dtype, device):
    search, kernel, padding = make_inputs(case, dtype, device, requires_grad=True)
    out = xcorr_depthwise(search, kernel, padding, backend="cuda")
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    expected = reference_with_grads(search, kernel, padding, grad_output)
    rtol, atol = TOLERANCE[dtype]
    for name, got, want in zip(("output", "grad search", "grad kernel"), (out, search.grad, kernel.grad), expected):
        assert got.dtype == dtype and got.device == search.device, name
        # Sums of up to h*w (output, search grad) or H*W (kernel grad) products: scale atol by their size.
        torch.testing.assert_close(got.detach().double().cpu(), want, rtol=rtol, atol=atol * want.abs().max().item(),
                                   msg=lambda m: f"{name}: {m}")


class CompiledCorrelation(torch.nn.Module):
    """A module around the op as the additive net uses it: mean over T templates of the response."""

    def __init__(self, templates: int):
        super().__init__()
        self.templates = templates

    def forward(self, search, kernels):
        B = search.shape[0]
        response = xcorr_depthwise(search.repeat_interleave(self.templates, dim=0), kernels, "same", backend="cuda")
        return response.reshape(B, self.templates, *response.shape[1:]).mean(dim=1)


def check_compiled_module(device, compile_backend):
    torch._dynamo.reset()
    module = CompiledCorrelation(templates=2)
    compiled = torch.compile(module, fullgraph=True, backend=compile_backend)
    search = torch.randn(3, 8, 16, 16, device=device, requires_grad=True)
    kernels = torch.randn(6, 8, 4, 4, device=device, requires_grad=True)
    out = compiled(search, kernels)
    out.square().sum().backward()
    grads = (search.grad.clone(), kernels.grad.clone())
    search.grad = kernels.grad = None
    expected = module(search, kernels)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grads, (search.grad, kernels.grad))


# CPU: the extension's C++ kernels


@pytest.mark.parametrize("case", SWEEP, ids=SWEEP_IDS)
def test_cpu_float32_matches_reference(case):
    assert_matches_reference(case, torch.float32, "cpu")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_half_precision_accumulates_in_float32(dtype):
    assert_matches_reference((2, 16, 16, 16, 4, 4, "same"), dtype, "cpu")


@pytest.mark.parametrize("case", GRADCHECK)
def test_cpu_gradcheck_float64(case):
    search, kernel, padding = make_inputs(case, torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, k: op(s, k, padding), (search, kernel))


@pytest.mark.parametrize("case", [SWEEP[1], SWEEP[3], GRADCHECK[0]])
def test_cpu_opcheck(case):
    search, kernel, padding = make_inputs(case, torch.float32, requires_grad=True)
    torch.library.opcheck(op, (search, kernel, padding))
    grad_output = torch.randn(op(search, kernel, padding).shape)
    torch.library.opcheck(op_backward, (grad_output, search.detach(), kernel.detach(), padding))


def test_cpu_torch_compile_fullgraph():
    # aot_eager traces the op through its fake and autograd registrations as inductor does, without the ~30 s
    # of C++ code generation for the surrounding ops; the GPU test runs inductor.
    check_compiled_module("cpu", "aot_eager")


def test_public_api_accepts_non_contiguous_inputs():
    search = torch.randn(2, 8, 12, 10).transpose(2, 3)
    kernel = torch.randn(2, 8, 3, 4)[..., :3]
    torch.testing.assert_close(xcorr_depthwise(search, kernel, "same", backend="cuda"),
                               xcorr_depthwise_reference(search, kernel, "same"))


def test_auto_uses_the_extension_on_cpu():
    assert backend.select("xcorr", "cpu") == "cuda"


@pytest.mark.parametrize("search,kernel,padding,match", [
    (torch.randn(2, 4, 8, 8), torch.randn(3, 4, 3, 3), "same", "batch size B = 2 but kernel has B = 3"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 5, 3, 3), "same", "C = 4 channels but kernel has C = 5"),
    (torch.randn(2, 4, 4, 6), torch.randn(2, 4, 5, 5), "valid", r"kernel \(h, w\) = \(5, 5\) is larger than search"),
    (torch.randn(2, 4, 8, 8).transpose(2, 3), torch.randn(2, 4, 3, 3), "same", "search must be contiguous"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 3, 6)[..., ::2], "same", "kernel must be contiguous"),
    (torch.ones(2, 4, 8, 8, dtype=torch.int32), torch.ones(2, 4, 3, 3, dtype=torch.int32), "same",
     "unsupported dtype Int of search"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 3, 3).double(), "same", "search is Float but kernel is Double"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 3, 3), "full", "padding must be 'same' or 'valid', got 'full'"),
    (torch.randn(2, 4, 8), torch.randn(2, 4, 3, 3), "same", r"search must have shape \(B, C, H, W\)"),
])
def test_op_rejects_bad_input_with_a_message(search, kernel, padding, match):
    with pytest.raises(RuntimeError, match=match):
        op(search, kernel, padding)


def test_backward_op_checks_grad_output():
    search, kernel, padding = make_inputs((2, 4, 8, 8, 3, 3, "valid"))
    with pytest.raises(RuntimeError, match=r"grad_output has shape \[2, 4, 8, 8\], expected \[2, 4, 6, 6\]"):
        op_backward(torch.randn(2, 4, 8, 8), search, kernel, padding)


def test_missing_extension_falls_back_and_explains_how_to_build():
    script = """
import sys
sys.modules["actrack_fast._C"] = None  # as if the extension had not been built
import torch
from actrack_fast import xcorr_depthwise, xcorr_op
assert xcorr_op._C is None
search, kernel = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 3, 3)
assert xcorr_depthwise(search, kernel).shape == (1, 2, 5, 5)
try:
    xcorr_depthwise(search, kernel, backend="cuda")
except RuntimeError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "not built" in result.stdout and "pip install --no-build-isolation" in result.stdout


# GPU: the extension's CUDA kernels


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", SWEEP + [(64 * 2, 96, 16, 16, 4, 4, "same"), (2, 3, 40, 37, 5, 6, "same")],
                         ids=SWEEP_IDS + ["B256_batch64", "tiled"])
def test_cuda_matches_reference(case, dtype):
    assert_matches_reference(case, dtype, "cuda")


@pytest.mark.cuda
def test_cuda_large_kernel_shrinks_its_tiles():
    # A 72x72 kernel leaves room for only a 16x8 output tile in shared memory.
    assert_matches_reference((1, 2, 80, 80, 72, 72, "same"), torch.float32, "cuda")


@pytest.mark.cuda
def test_cuda_kernel_beyond_shared_memory_is_refused():
    search, kernel, padding = make_inputs((1, 1, 96, 96, 90, 90, "same"), device="cuda")
    with pytest.raises(RuntimeError, match="90x90 kernel is too large"):
        op(search, kernel, padding)


@pytest.mark.cuda
@pytest.mark.parametrize("case", GRADCHECK)
def test_cuda_gradcheck_float64(case):
    search, kernel, padding = make_inputs(case, torch.float64, "cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, k: op(s, k, padding), (search, kernel))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_opcheck(dtype):
    search, kernel, padding = make_inputs(SWEEP[1], dtype, "cuda", requires_grad=True)
    torch.library.opcheck(op, (search, kernel, padding))


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    check_compiled_module("cuda", "inductor")


@pytest.mark.cuda
def test_cuda_graph_capture_forward_and_backward():
    search, kernel, padding = make_inputs((16, 96, 16, 16, 4, 4, "same"), device="cuda", requires_grad=True)
    grad_output = torch.randn(16, 96, 16, 16, device="cuda")

    def step():
        out = op(search, kernel, padding)
        return (out, *torch.autograd.grad(out, (search, kernel), grad_output))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up outside the capture, as CUDA graphs require
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    for _ in range(2):  # replay on fresh inputs copied into the captured buffers
        with torch.no_grad():
            search.copy_(torch.randn_like(search))
            kernel.copy_(torch.randn_like(kernel))
            grad_output.copy_(torch.randn_like(grad_output))
        graph.replay()
        expected = reference_with_grads(search, kernel, padding, grad_output)
        for got, want in zip(captured, expected):
            torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


@pytest.mark.cuda
def test_cuda_op_rejects_tensors_on_other_devices():
    with pytest.raises(RuntimeError, match="kernel is on cpu but this kernel runs on cuda tensors"):
        op(torch.randn(1, 2, 8, 8, device="cuda"), torch.randn(1, 2, 3, 3), "same")
