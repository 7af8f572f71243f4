"""Bad input raises ValueError/TypeError naming the argument and the expected value."""
import pytest
import torch

from actrack_fast import build_model, xcorr_depthwise


@pytest.fixture(scope="module")
def model():
    return build_model("tiny").eval()


def good(cfg, batch=2):
    return (torch.randn(batch, 3, cfg.search_size, cfg.search_size),
            torch.randn(batch, cfg.num_templates, 3, cfg.template_size, cfg.template_size))


@pytest.mark.parametrize("make,error,match", [
    (lambda s, t: (s[:, :2], t), ValueError, r"search must have shape \(\*, 3, 128, 128\)"),
    (lambda s, t: (s[..., :64, :64], t), ValueError, "search must have shape"),
    (lambda s, t: (s, t[:, :1]), ValueError, "num_templates=2"),
    (lambda s, t: (s, t[..., :96, :96]), ValueError, r"templates must have shape \(2, 2, 3, 128, 128\)"),
    (lambda s, t: (s, t[:1]), ValueError, "templates must have shape"),
    (lambda s, t: ((s * 255).to(torch.uint8), t), TypeError, "search must be a floating-point"),
    (lambda s, t: (s, t.double()), TypeError, "must match search"),
    (lambda s, t: (s.numpy(), t), TypeError, "search must be a torch.Tensor"),
    (lambda s, t: (s.index_fill(0, torch.tensor([1]), float("nan")), t), ValueError, "search contains NaN"),
    (lambda s, t: (s, t.index_fill(0, torch.tensor([0]), float("inf"))), ValueError, "templates contains NaN"),
])
def test_bad_crops(model, make, error, match):
    search, templates = make(*good(model.config))
    with pytest.raises(error, match=match):
        model.generate(search, templates)


def test_bad_decode_arguments(model):
    search, templates = good(model.config)
    with pytest.raises(ValueError, match="method"):
        model.generate(search, templates, method="beam")
    with pytest.raises(ValueError, match="prompt_tokens is 0"):
        model.generate(search, templates, prompt_boxes=torch.rand(2, 4))
    with pytest.raises(ValueError, match="at most 5 tokens"):
        model(search, templates, torch.zeros(2, 6, dtype=torch.long))


def test_prompt_boxes_required_and_checked():
    model = build_model("tiny", prompt_tokens=4).eval()
    search, templates = good(model.config)
    with pytest.raises(ValueError, match="prompt_boxes"):
        model.generate(search, templates)
    with pytest.raises(ValueError, match=r"prompt_boxes must have shape \(2, 4\)"):
        model.generate(search, templates, prompt_boxes=torch.rand(2, 3))


@pytest.mark.parametrize("search,kernel,padding,error,match", [
    (torch.randn(2, 4, 8, 8), torch.randn(3, 4, 3, 3), "same", ValueError, r"agree in \(B, C\)"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 5, 3, 3), "same", ValueError, r"agree in \(B, C\)"),
    (torch.randn(2, 4, 4, 4), torch.randn(2, 4, 5, 5), "valid", ValueError, "larger than search"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 3, 3), "full", ValueError, "padding"),
    (torch.randn(2, 4, 8), torch.randn(2, 4, 3, 3), "same", ValueError, r"search must have shape \(B, C, H, W\)"),
    (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 3, 3).double(), "same", TypeError, "share dtype"),
    (torch.ones(2, 4, 8, 8, dtype=torch.long), torch.ones(2, 4, 3, 3, dtype=torch.long), "same", TypeError,
     "floating-point"),
])
def test_bad_correlation_inputs(search, kernel, padding, error, match):
    with pytest.raises(error, match=match):
        xcorr_depthwise(search, kernel, padding)


def test_finite_scan_can_be_skipped_by_trusted_callers(model):
    search, templates = good(model.config)
    search[0, 0, 0, 0] = float("nan")
    result = model.generate(search, templates, check_finite=False)
    assert result.tokens.shape == (2, 4)
