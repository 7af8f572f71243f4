"""The additive net's inference shortcuts against its plain PyTorch forward.

In eval mode without autograd each conv + BatchNorm runs as one folded convolution and, when the search and
template crops have one size, the stem runs once over all of them. Both must compute what the unfolded,
per-crop forward computes, and the folded weights must follow every change of the weights or statistics.
On a GPU (``cuda`` marker) the ``conv_relu`` backend ``cuda`` (cuDNN's fused conv + bias + ReLU) is compared with
a float64 forward: 16-bit error within the 16-bit tolerance and no larger than the unfused convolution's.
That path's Triton kernels (the stem's first stage, the final LayerNorm read straight from the maps) run in
Triton's interpreter on CPU (``interpreter`` marker) on small shapes.
"""
import copy

import pytest
import torch
from torch import nn

from actrack_fast import backend
from actrack_fast.additive import AdditiveNet, ConvBNReLU
from actrack_fast.config import get_config

TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def random_statistics(net: nn.Module, seed: int = 0) -> None:
    """BatchNorm weights and running statistics far from the identity, so that folding them matters."""
    generator = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in ((module.weight, 0.5, 2.0), (module.bias, -1.0, 1.0),
                                      (module.running_mean, -1.0, 1.0), (module.running_var, 0.2, 3.0)):
                with torch.no_grad():
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)


def crops(config, batch: int, dtype: torch.dtype, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    search = torch.randn(batch, 3, config.search_size, config.search_size, generator=generator, dtype=dtype)
    templates = torch.randn(batch, config.num_templates, 3, config.template_size, config.template_size,
                            generator=generator, dtype=dtype)
    return search, templates


def plain_forward(net: AdditiveNet, search: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """The forward with neither shortcut: autograd on (no folding), the net in training mode (one stem pass
    per crop kind) with every BatchNorm in eval mode (running statistics, as at inference)."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    with torch.enable_grad():
        out = net(search, templates).detach()
    net.eval()
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,batch", [("tiny", 1), ("tiny", 3)])
def test_folded_batched_forward_matches_the_plain_one(name, batch, dtype):
    config = get_config(name)
    net = AdditiveNet(config).to(dtype).eval()
    random_statistics(net)
    search, templates = crops(config, batch, dtype)
    expected = plain_forward(net, search, templates)
    with torch.no_grad():
        got = net(search, templates)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


def test_different_crop_sizes_take_separate_stem_passes():
    config = get_config("tiny").replace(template_size=get_config("tiny").search_size // 2)
    net = AdditiveNet(config).double().eval()
    random_statistics(net)
    search, templates = crops(config, 2, torch.float64)
    with torch.no_grad():
        got = net(search, templates)
    torch.testing.assert_close(got, plain_forward(net, search, templates), **TOLERANCE[torch.float64])


@pytest.mark.parametrize("change", ["conv weight", "running mean", "running var", "norm weight", "dtype"])
def test_folded_weights_follow_every_change(change):
    block = ConvBNReLU(3, 8, 3, 2).eval()
    random_statistics(block)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = block(x)
        if change == "conv weight":
            block[0].weight.mul_(1.5)
        elif change == "running mean":
            block[1].running_mean.add_(0.25)
        elif change == "running var":
            block[1].running_var.mul_(2.0)
        elif change == "norm weight":
            block[1].weight.neg_()
        else:
            block.double()
            x = x.double()
        after = block(x)
    with torch.enable_grad():
        expected = block[2](block[1](block[0](x))).detach()
    assert not torch.allclose(after.double(), before.double())
    torch.testing.assert_close(after, expected, **TOLERANCE[after.dtype])


def test_training_mode_and_autograd_use_batch_statistics_and_the_unfolded_path():
    block = ConvBNReLU(3, 8, 3, 1)
    random_statistics(block)
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    block(x).sum().backward()  # training mode: BatchNorm normalises with the batch's own statistics
    assert block[0].weight.grad is not None and x.grad.abs().sum() > 0
    assert not block._folded


def test_fused_conv_relu_is_cuda_only_and_auto_keeps_the_cpu_on_the_reference():
    x = torch.randn(1, 3, 8, 8, dtype=torch.bfloat16)
    assert backend.select("conv_relu", x) == "reference"
    with pytest.raises(RuntimeError, match="needs a CUDA GPU with cuDNN"):
        backend.select("conv_relu", x, "cuda")


def _gpu_net(seed: int = 0) -> AdditiveNet:
    net = AdditiveNet(get_config("B256")).cuda().eval()
    random_statistics(net, seed)
    return net


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["bf16 inputs", "fp16 inputs", "autocast bf16", "fp32 explicit"])
def test_cuda_fused_conv_relu_is_as_accurate_as_the_unfused_convolution(mode):
    net = _gpu_net()
    search, templates = (t.cuda() for t in crops(get_config("B256"), 2, torch.float32, seed=4))
    expected = plain_forward(net.double(), search.double(), templates.double())
    net.float()
    dtype = {"bf16 inputs": torch.bfloat16, "fp16 inputs": torch.float16}.get(mode, torch.float32)
    if dtype != torch.float32:
        net, search, templates = net.to(dtype), search.to(dtype), templates.to(dtype)
    results = {}
    for name in ("cuda", "reference"):
        with torch.no_grad(), backend.use_backend(name, ops=("conv_relu",)), \
                torch.autocast("cuda", torch.bfloat16, enabled=mode == "autocast bf16"):
            assert backend.select("conv_relu", search) == name
            results[name] = net(search, templates)
    # The fast path's LayerNorm gives what PyTorch's does: fp32 under autocast, else the maps' dtype.
    assert results["cuda"].dtype == results["reference"].dtype == (torch.float32 if mode == "autocast bf16" else dtype)
    results = {name: got.double() for name, got in results.items()}
    assert all(torch.isfinite(got).all() for got in results.values())
    # Relative Frobenius error: elementwise maxima sit on ReLUs that flip between roundings after five layers.
    errors = {name: ((got - expected).norm() / expected.norm()).item() for name, got in results.items()}
    tolerance = 2e-3 if mode == "fp32 explicit" else 2e-2  # fp32: cuDNN's TF32 convolutions
    assert errors["cuda"] <= tolerance, errors
    assert errors["cuda"] <= 1.25 * errors["reference"], errors


def _stem_reference(search, templates, weight, bias):
    """Float64 conv + bias + ReLU over the crops in the kernel's order (per frame: search, then templates)."""
    crops_ = torch.cat([search[:, None], templates], dim=1).flatten(0, 1).double()
    return torch.relu(torch.nn.functional.conv2d(crops_, weight.double(), bias.double(), stride=2, padding=1))


def _stem_case(frames, templates_per_frame, size, channels, dtype, device, channels_last_weight=True):
    generator = torch.Generator().manual_seed(size + channels)
    search = torch.randn(frames, 3, size, size, generator=generator).to(device, dtype)
    templates = torch.randn(frames, templates_per_frame, 3, size, size, generator=generator).to(device, dtype)
    weight = (torch.randn(channels, 3, 3, 3, generator=generator) / 27 ** 0.5).to(device, dtype)
    if channels_last_weight:  # as ConvBNReLU.folded keeps it
        weight = weight.contiguous(memory_format=torch.channels_last)
    bias = (torch.randn(channels, generator=generator) * 0.1).to(device, dtype)
    return search, templates, weight, bias


STEM_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("frames,templates_per_frame,size,channels,channels_last_weight",
                         [(1, 2, 16, 8, True), (2, 1, 13, 24, False), (1, 3, 9, 20, True)])
def test_stem_kernel_in_the_interpreter(dtype, frames, templates_per_frame, size, channels, channels_last_weight):
    """The Triton first stage against a float64 convolution: odd sizes (padding on one side only), channel counts
    that are not a power of two, both weight layouts; a channels-last output in the weight's dtype."""
    from kernels.stem_conv import stem_conv_relu

    case = _stem_case(frames, templates_per_frame, size, channels, dtype, torch.device("cpu"), channels_last_weight)
    got = stem_conv_relu(*case)
    expected = _stem_reference(*case)
    assert got.shape == expected.shape and got.dtype == dtype
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(got).all()
    assert ((got.double() - expected).norm() / expected.norm()).item() < STEM_TOLERANCE[dtype]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames", [1, 64])
def test_stem_kernel_on_gpu(dtype, frames):
    """B256's first stage (3 -> 24, 256 x 256 crops, 2 templates) at one frame and at 64, against float64 and no
    less accurate than cuDNN's convolution in the same dtype; fp32 crops under a 16-bit weight (autocast) too."""
    from kernels.stem_conv import stem_conv_relu

    case = _stem_case(frames, 2, 256, 24, dtype, torch.device("cuda"))
    expected = _stem_reference(*case)
    got = stem_conv_relu(*case)
    search, templates, weight, bias = case
    crops_ = torch.cat([search[:, None], templates], dim=1).flatten(0, 1)
    with torch.backends.cudnn.flags(allow_tf32=False):
        cudnn = torch.relu(torch.nn.functional.conv2d(crops_, weight, bias, stride=2, padding=1))
    errors = [((t.double() - expected).norm() / expected.norm()).item() for t in (got, cudnn)]
    assert errors[0] < STEM_TOLERANCE[dtype] and errors[0] <= 1.25 * errors[1] + 1e-7, errors
    mixed = stem_conv_relu(search.float(), templates.float(), weight, bias)
    assert mixed.dtype == dtype
    assert ((mixed.double() - expected).norm() / expected.norm()).item() < STEM_TOLERANCE[dtype]


# --- the final LayerNorm on the fast path: one Triton pass from the maps ------------------------------------

NORM_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _norm_case(frames, templates_per_frame, size, template_size, channels, dtype, channels_last, device):
    """A search map (B, 1, C, H, W) and template maps (B, T, C, h, w) laid out as the fast stem leaves them (each
    crop channels-last, the templates a slice of every crop's maps) or contiguous, with per-channel offsets and
    scales so that the statistics matter; LayerNorm parameters in fp32, as a model keeps them."""
    generator = torch.Generator().manual_seed(size * channels + templates_per_frame)

    def maps(count, side):
        x = torch.randn(frames * count, channels, side, side, generator=generator) * 3 + torch.randn(channels, 1, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(device, dtype).unflatten(0, (frames, count))

    search = maps(1, size)
    templates = maps(1 + templates_per_frame, template_size)[:, 1:]
    weight = (torch.randn(channels, generator=generator) * 0.5 + 1).to(device)
    bias = (torch.randn(channels, generator=generator) * 0.5).to(device)
    return search, templates, weight, bias


def _norm_reference(search, templates, weight, bias, eps=1e-5):
    """The plain forward's tokens and LayerNorm in float64."""
    tokens = torch.cat([search[:, 0].flatten(2).transpose(1, 2), templates.flatten(3).transpose(2, 3).flatten(1, 2)],
                       dim=1)
    return torch.nn.functional.layer_norm(tokens.double(), weight.shape, weight.double(), bias.double(), eps)


def _rel_err(got, expected):
    assert not torch.isnan(got).any(), "NaN in the output"
    return ((got.double() - expected).norm() / expected.norm()).item()


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("frames,templates_per_frame,size,template_size,channels,channels_last",
                         [(2, 1, 4, 4, 32, True), (1, 2, 5, 3, 24, True), (2, 3, 3, 4, 20, False),
                          (1, 2, 4, 4, 96, False)])
def test_maps_layernorm_in_the_interpreter(dtype, frames, templates_per_frame, size, template_size, channels,
                                           channels_last):
    """One to three templates, template maps of the search map's size and of others, widths that are not a power
    of two, both layouts; the output in the maps' dtype, or fp32 (autocast's LayerNorm) with fp32 accuracy."""
    from kernels.layernorm import maps_layernorm

    case = _norm_case(frames, templates_per_frame, size, template_size, channels, dtype, channels_last,
                      torch.device("cpu"))
    expected = _norm_reference(*case)
    got = maps_layernorm(*case, 1e-5)
    assert got.dtype == dtype and got.shape == expected.shape and got.is_contiguous()
    assert _rel_err(got, expected) < NORM_TOLERANCE[dtype]
    wide = maps_layernorm(*case, 1e-5, out_dtype=torch.float32)
    assert wide.dtype == torch.float32 and _rel_err(wide, expected) < NORM_TOLERANCE[torch.float32]
    search, templates, weight, bias = case
    narrow = (search, templates, weight.to(dtype), bias.to(dtype))  # parameters in the maps' dtype
    assert _rel_err(maps_layernorm(*narrow, 1e-5), _norm_reference(*narrow)) < NORM_TOLERANCE[dtype]


def test_maps_layernorm_bad_inputs_are_named(monkeypatch):
    from kernels import layernorm as layernorm_module
    from kernels.layernorm import maps_layernorm

    search, templates, weight, bias = _norm_case(1, 2, 4, 4, 8, torch.float32, True, torch.device("cpu"))
    with pytest.raises(ValueError, match="first must be a"):
        maps_layernorm(search[:, 0], templates, weight, bias, 1e-5)
    with pytest.raises(ValueError, match="first's frames and channels"):
        maps_layernorm(search, templates[:, :, :4], weight, bias, 1e-5)
    with pytest.raises(ValueError, match="weight must be a contiguous"):
        maps_layernorm(search, templates, weight[:4], bias, 1e-5)
    with pytest.raises(TypeError, match="share a dtype"):
        maps_layernorm(search, templates.half(), weight, bias, 1e-5)
    with pytest.raises(TypeError, match="out_dtype"):
        maps_layernorm(search, templates, weight, bias, 1e-5, out_dtype=torch.float64)
    with pytest.raises(TypeError, match="bias"):
        maps_layernorm(search.half(), templates.half(), weight, bias.double(), 1e-5)
    monkeypatch.setattr(layernorm_module, "INTERPRET", False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA tensors"):
            maps_layernorm(search, templates, weight, bias, 1e-5)


@pytest.fixture
def fast_path_on_cpu(monkeypatch):
    """The additive net's Triton inference path (first stem stage and final LayerNorm) wherever its inference
    shortcuts apply, so on this CPU too (the kernels run in the interpreter); records the LayerNorm's calls."""
    from actrack_fast import additive
    from kernels import layernorm as layernorm_module

    calls = []
    kernel = layernorm_module.maps_layernorm
    monkeypatch.setattr(additive, "_triton_inference", lambda stage, x: stage.inference_backend(x) is not None)
    monkeypatch.setattr(layernorm_module, "maps_layernorm", lambda *args: calls.append(1) or kernel(*args))
    return calls


@pytest.mark.interpreter
@pytest.mark.parametrize("templates_per_frame,template_size", [(1, 64), (2, 64), (3, 32)])
@pytest.mark.parametrize("mode", ["fp32", "fp16", "autocast fp16"])
def test_fast_path_output_matches_the_plain_forward(fast_path_on_cpu, templates_per_frame, template_size, mode):
    """The whole additive net on its fast path (the stem's first stage and the LayerNorm as Triton kernels; one
    stem pass, or one per crop kind where the sizes differ) against the plain fp64 forward, in the dtype the
    plain forward gives in that mode (the CPU's autocast runs LayerNorm in the input's dtype, CUDA's in fp32:
    the GPU test below)."""
    config = get_config("tiny", search_size=64, template_size=template_size, num_templates=templates_per_frame)
    net = AdditiveNet(config).eval()
    random_statistics(net)
    search, templates = crops(config, 2, torch.float32, seed=templates_per_frame)
    expected = plain_forward(copy.deepcopy(net).double(), search.double(), templates.double())
    if mode == "fp16":
        net, search, templates = net.half(), search.half(), templates.half()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16, enabled=mode == "autocast fp16"):
        got = net(search, templates)
        with backend.use_backend("reference", ("conv_relu",)):
            plain_dtype = plain_forward(net, search, templates).dtype
    assert fast_path_on_cpu
    assert got.dtype == plain_dtype == (torch.float32 if mode == "fp32" else torch.float16)
    assert _rel_err(got, expected) < (1e-5 if mode == "fp32" else 2e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frames,channels", [(1, 96), (64, 96), (64, 128)])
def test_maps_layernorm_on_gpu(dtype, frames, channels):
    """B256's and L256's additive features (16 x 16 maps, 2 templates, 96 or 128 channels) at one frame and at 64,
    against float64: with the parameters in the maps' dtype (a 16-bit model without autocast; PyTorch's CUDA
    LayerNorm takes no other) no less accurate than PyTorch's LayerNorm, and with fp32 parameters and an fp32
    output (autocast's LayerNorm) accurate to fp32."""
    from kernels.layernorm import maps_layernorm

    search, templates, weight, bias = _norm_case(frames, 2, 16, 16, channels, dtype, True, torch.device("cuda"))
    expected = _norm_reference(search, templates, weight, bias)
    wide = maps_layernorm(search, templates, weight, bias, 1e-5, out_dtype=torch.float32)
    assert _rel_err(wide, expected) < NORM_TOLERANCE[torch.float32]
    weight, bias = weight.to(dtype), bias.to(dtype)
    expected = _norm_reference(search, templates, weight, bias)
    tokens = torch.cat([search[:, 0].flatten(2).transpose(1, 2), templates.flatten(3).transpose(2, 3).flatten(1, 2)],
                       dim=1)
    pytorch = torch.nn.functional.layer_norm(tokens, (channels,), weight, bias, 1e-5)
    errors = [_rel_err(t, expected) for t in (maps_layernorm(search, templates, weight, bias, 1e-5), pytorch)]
    assert errors[0] < NORM_TOLERANCE[dtype] and errors[0] <= 1.25 * errors[1] + 1e-7, errors
