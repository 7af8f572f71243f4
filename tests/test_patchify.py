"""The Triton patch kernel (``kernels.patchify``) against ``PatchEmbed.patches``, and the encoder that uses it.

The kernel is a copy, so every check is bit for bit. On CPU it runs in Triton's interpreter (``TRITON_INTERPRET=1``,
set by conftest) on small crops; GPU tests (``cuda`` marker) take B256's 256-pixel crops at 64 frames.
"""
import pytest
import torch

from actrack_fast import backend, build_model
from actrack_fast.config import get_config
from actrack_fast.encoder import PatchEmbed, VisionTransformer, _token_stand_in
from kernels import patchify as patchify_module
from kernels.patchify import patchify

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def reference(search, templates, patch_size):
    """The two copies of ``VisionTransformer.patch_tokens``, side by side: (B, Nx + T*Nz, C p p)."""
    embed = PatchEmbed(patch_size, 8)
    return torch.cat([embed.patches(search), embed.patches(templates).flatten(1, 2).to(search.dtype)], dim=1)


def crops(frames, per_frame, search_size, template_size, dtype, dev=None, seed=0):
    """Random crops (never zeros), the search rectangular when given a (height, width) pair."""
    generator = torch.Generator().manual_seed(seed)
    height, width = search_size if isinstance(search_size, tuple) else (search_size, search_size)
    search = torch.randn(frames, 3, height, width, generator=generator).to(dev or device(), dtype)
    templates = torch.randn(frames, per_frame, 3, template_size, template_size, generator=generator)
    return search, templates.to(dev or device(), dtype)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("frames,per_frame,search_size,template_size,patch_size",
                         [(2, 1, 32, 32, 8), (1, 2, 32, 16, 8), (2, 3, 16, 24, 8), (1, 2, 32, 32, 16),
                          (2, 2, (16, 24), 8, 8), (1, 1, 24, 24, 12)])
def test_patches_bit_identical_in_the_interpreter(dtype, frames, per_frame, search_size, template_size, patch_size):
    """One to three templates, search and template crops of one size and of two, a rectangular search crop, a
    patch size that is not a power of two (masked tile edges)."""
    search, templates = crops(frames, per_frame, search_size, template_size, dtype)
    got = patchify(search, templates, patch_size)
    expected = reference(search, templates, patch_size)
    assert got.dtype == dtype and got.shape == expected.shape and got.is_contiguous()
    assert torch.equal(got, expected)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", DTYPES)
def test_any_strides_in_the_interpreter(dtype):
    """Channels-last search crops, template crops sliced out of a wider batch and transposed (no unit stride along
    a patch row), and templates in another dtype (cast as the copy casts them)."""
    search, templates = crops(2, 3, 16, 16, dtype)
    search = search.contiguous(memory_format=torch.channels_last)
    wide = torch.randn(2, 5, 3, 16, 16, device=device()).to(dtype)
    for batch in (wide[:, 1:4], wide[:, ::2], wide[:, 1:4].transpose(-1, -2), templates.float()):
        got = patchify(search, batch, 8)
        assert got.dtype == dtype
        assert torch.equal(got, reference(search, batch, 8))


def test_bad_inputs_are_named(monkeypatch):
    search, templates = crops(1, 2, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="patch_size must be"):
        patchify(search, templates, 0)
    with pytest.raises(ValueError, match="search must be a"):
        patchify(search[0], templates, 8)
    with pytest.raises(ValueError, match="templates must be a"):
        patchify(search, templates[0], 8)
    with pytest.raises(ValueError, match="frames and channels"):
        patchify(search, templates[:, :, :2], 8)
    with pytest.raises(ValueError, match="templates's height and width must be multiples"):
        patchify(search, templates[..., :12], 8)
    with pytest.raises(TypeError, match="search must be a float tensor"):
        patchify(search.int(), templates, 8)
    monkeypatch.setattr(patchify_module, "INTERPRET", False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA tensor"):
            patchify(search, templates, 8)


# --- the encoder around it ----------------------------------------------------------------------------------

def tiny_model(num_templates=2, search_size=64, template_size=48):
    config = get_config("tiny", embed_dim=64, num_heads=2, depth=2, search_size=search_size,
                        template_size=template_size, num_templates=num_templates, additive_dim=16, hidden_dim=32,
                        dec_heads=2, dec_ffn_dim=64)
    model = build_model(config).to(device()).eval()
    with torch.no_grad():  # the zero-initialised injections nonzero, so that the additive features count
        for projection in model.additive.injections.values():
            projection.weight.normal_(0.0, 0.05)
    return model


@pytest.mark.interpreter
@pytest.mark.parametrize("num_templates,search_size,template_size", [(1, 48, 48), (2, 64, 48), (3, 32, 64)])
@torch.no_grad()
def test_encoder_output_unchanged_by_the_kernel(triton_on_cpu, monkeypatch, num_templates, search_size,
                                                template_size):
    """On the Triton path the encoder's patches come from the kernel, and its output is the one it gives with the
    torch copies, bit for bit; on the reference path the kernel is not called."""
    model = tiny_model(num_templates, search_size, template_size)
    search, templates = crops(2, num_templates, search_size, template_size, torch.float32)
    calls = []
    kernel = patchify_module.patchify
    monkeypatch.setattr(patchify_module, "patchify", lambda *args: calls.append(1) or kernel(*args))
    with backend.use_backend("reference", ("encoder_block",)):
        model.encode(search, templates)
    assert not calls
    with backend.use_backend("triton", ("encoder_block",)):
        fast = model.encode(search, templates)
        assert calls
        copies = VisionTransformer.patch_tokens
        monkeypatch.setattr(VisionTransformer, "patch_tokens",
                            lambda self, search, templates, fused: copies(self, search, templates, False))
        assert torch.equal(fast, model.encode(search, templates))


@pytest.mark.interpreter
def test_crops_that_need_a_gradient_take_the_copies(triton_on_cpu):
    model = tiny_model()
    search, templates = crops(1, 2, 64, 48, torch.float32)
    search.requires_grad_(True)
    with backend.use_backend("triton", ("encoder_block",)):
        model.encoder.body.patch_tokens(search, templates, fused=True).sum().backward()
    assert search.grad is not None and search.grad.abs().sum() > 0


def test_backend_chosen_before_the_patches_as_on_the_tokens(monkeypatch):
    """The encoder picks its backend from a stand-in for the tokens before cutting the patches: it must pick what
    the rule would pick on the tokens themselves, for plain and autocast forwards (a 16-bit-only rule, as on the
    GPU)."""
    monkeypatch.setitem(backend._PROVIDERS, "encoder_block", {})
    backend.register("encoder_block", "triton", lambda d: True, "test",
                     auto=lambda d, x: x is not None and x.dim() == 3 and x.dtype in (torch.float16, torch.bfloat16))
    model = tiny_model()
    body = model.encoder.body
    for model_dtype, input_dtype, autocast in [(torch.float32, torch.float32, None),
                                               (torch.bfloat16, torch.bfloat16, None),
                                               (torch.float32, torch.float32, torch.bfloat16),
                                               (torch.bfloat16, torch.float32, torch.bfloat16),
                                               (torch.float64, torch.float64, torch.bfloat16)]:
        body.to(model_dtype)
        search, templates = crops(1, 2, 64, 48, input_dtype)
        with torch.no_grad(), torch.autocast(device().type, dtype=autocast or torch.float32,
                                             enabled=autocast is not None):
            tokens = body.patch_tokens(search, templates)
            stand_in = _token_stand_in(search)
            assert (stand_in.dim(), stand_in.dtype, stand_in.device) == (3, tokens.dtype, tokens.device)
            assert backend.select("encoder_block", stand_in) == backend.select("encoder_block", tokens)


# --- GPU: B256 crops ------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("frames", [1, 64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_patches_bit_identical_on_gpu(dtype, frames, channels_last):
    """B256's crops (256 pixels, 16-pixel patches, 2 templates) at one frame and at 64, contiguous as the crop
    op writes them and channels-last."""
    search, templates = crops(frames, 2, 256, 256, dtype, torch.device("cuda"))
    if channels_last:
        search = search.contiguous(memory_format=torch.channels_last)
        templates = templates.contiguous(memory_format=torch.channels_last_3d)
    got = patchify(search, templates, 16)
    assert torch.equal(got, reference(search, templates, 16))


@pytest.mark.cuda
@torch.no_grad()
def test_b256_patch_tokens_unchanged_on_gpu():
    """The patch GEMM's input is bit for bit the copies', so its tokens are too (bf16 B256, 64 frames)."""
    body = build_model("B256").encoder.body.cuda().to(torch.bfloat16)
    search, templates = crops(64, 2, 256, 256, torch.bfloat16, torch.device("cuda"))
    assert torch.equal(body.patch_tokens(search, templates, fused=True), body.patch_tokens(search, templates))
