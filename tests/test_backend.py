"""The one place that picks backends: precedence, fallback and explicit requests."""
import pytest
import torch

from actrack_fast import backend


@pytest.fixture
def fake_triton(monkeypatch):
    """A fast path for the decoder that exists only on CUDA devices."""
    monkeypatch.setitem(backend._PROVIDERS, "decoder", {})
    backend.register("decoder", "triton", lambda device: device.type == "cuda", "install triton and use a GPU")


def test_reference_is_always_available(monkeypatch):
    monkeypatch.setattr(backend, "_PROVIDERS", {op: {} for op in backend.OPS})  # as without any fast path built
    for op in backend.OPS:
        assert backend.select(op, "cpu") == "reference"
        assert backend.available(op, "cpu")[-1] == "reference"


def test_auto_picks_the_available_fast_path(fake_triton):
    assert backend.select("decoder", "cpu") == "reference"
    assert backend.select("decoder", torch.device("cuda", 0)) == "triton"


def test_explicit_unavailable_backend_says_how_to_get_it(fake_triton):
    with pytest.raises(RuntimeError, match="install triton"):
        backend.select("decoder", "cpu", "triton")
    with pytest.raises(RuntimeError, match="does not implement"):
        backend.select("encoder_block", "cpu", "cuda")


def test_precedence_argument_context_environment(fake_triton, monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setenv(backend.ENV_VAR, "decoder=reference")
    assert backend.select("decoder", cuda) == "reference"
    with backend.use_backend("auto"):
        assert backend.select("decoder", cuda) == "triton"
        assert backend.select("decoder", cuda, "reference") == "reference"
    monkeypatch.setenv(backend.ENV_VAR, "reference")
    assert backend.select("decoder", cuda) == "reference"


@pytest.mark.parametrize("value,match", [("decoder=fastest", "backend"), ("decodr=triton", "op in")])
def test_bad_environment_value_is_named(monkeypatch, value, match):
    monkeypatch.setenv(backend.ENV_VAR, value)
    with pytest.raises(ValueError, match=match):
        backend.select("decoder", "cpu")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown op"):
        backend.select("softmax", "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        with backend.use_backend("fast"):
            pass


def frames(batch: int, dtype=torch.bfloat16, device="meta", requires_grad=False) -> torch.Tensor:
    """A B256-shaped token stream of ``batch`` frames (meta tensors: shapes and dtypes without memory)."""
    return torch.empty(batch, 768, 768, dtype=dtype, device=device, requires_grad=requires_grad)


def test_auto_keeps_the_reference_encoder_where_triton_is_slower():
    """The Triton encoder path was measured slower than the SDPA reference for training (autograd on, even
    when the tokens themselves need no gradient), and not measured in fp32 or without Hopper, so there
    ``auto`` keeps the reference; only an explicit request picks it."""
    assert backend.select("encoder_block", torch.device("cuda", 0)) == "reference"  # no input to judge by
    for x in (frames(1, torch.float32), frames(1, requires_grad=True), frames(1)):
        assert not backend._triton_block_pays(x.device, x)
    with torch.no_grad():
        assert not backend._triton_block_pays(frames(1).device, frames(1))  # not a CUDA device


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 32])
def test_auto_picks_the_triton_encoder_for_16_bit_inference(batch):
    x = torch.empty(batch, 768, 768, dtype=torch.bfloat16, device="cuda")
    expected = "triton" if torch.cuda.get_device_capability()[0] >= 9 else "reference"
    with torch.no_grad():
        assert backend.select("encoder_block", x) == expected
        assert backend.select("encoder_block", x.float()) == "reference"
    assert backend.select("encoder_block", x) == "reference"  # autograd on: a training step
