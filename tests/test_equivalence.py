"""The correctness anchor: with the additive injections at zero, ACTrack computes exactly SeqTrack."""
import pytest
import torch

import seqtrack_functional as seqtrack
from actrack_fast import build_model


def crops(cfg, batch):
    return (torch.randn(batch, 3, cfg.search_size, cfg.search_size),
            torch.randn(batch, cfg.num_templates, 3, cfg.template_size, cfg.template_size))


@pytest.mark.parametrize("name,batch", [("tiny", 3), pytest.param("B256", 1, marks=pytest.mark.slow)])
@torch.no_grad()
def test_zero_additive_equals_seqtrack(name, batch):
    model = build_model(name).eval()
    cfg = model.config
    # A fresh additive net has nonzero features: only the zero projections make it a no-op.
    for module in model.additive.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
    search, templates = crops(cfg, batch)
    assert model.additive(search, templates).abs().mean() > 0.1
    sd = model.state_dict()

    ref_tokens, ref_probs, ref_encoded = seqtrack.generate(sd, search, templates, cfg)
    encoded = model.encode(search, templates)
    torch.testing.assert_close(encoded, ref_encoded, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(encoded, model.encode(search, templates, additive=False), rtol=0, atol=0)
    for method in ("recompute", "cached"):
        result = model.generate(search, templates, method=method)
        assert torch.equal(result.tokens, ref_tokens), method
        torch.testing.assert_close(result.probs, ref_probs, rtol=1e-4, atol=1e-7)


@torch.no_grad()
def test_nonzero_injection_changes_the_output():
    model = build_model("tiny").eval()
    search, templates = crops(model.config, 2)
    before = model.encode(search, templates)
    torch.nn.init.normal_(model.additive.injections["1"].weight, std=0.05)
    after = model.encode(search, templates)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("template_size", [None, 32])
@torch.no_grad()
def test_encoder_matches_seqtrack_in_fp64(template_size):
    """fp64 leaves no room for rounding: catches constant slips (LayerNorm eps, scale) fp32 would hide.
    Also with templates smaller than the search crop (as in the 384 configs), whose patches share one GEMM."""
    overrides = {} if template_size is None else {"template_size": template_size}
    model = build_model("tiny", **overrides).double().eval()
    search, templates = (t.double() for t in crops(model.config, 2))
    _, _, ref_encoded = seqtrack.generate(model.state_dict(), search, templates, model.config)
    torch.testing.assert_close(model.encode(search, templates), ref_encoded, rtol=1e-10, atol=1e-10)
