"""The two reference decodes (SeqTrack recompute and KV-cached) agree token for token in fp32."""
import pytest
import torch

from actrack_fast import build_model
from actrack_fast.decoding import boxes_to_tokens, tokens_to_boxes


@pytest.mark.parametrize("prompt_tokens", [0, 4])
@pytest.mark.parametrize("window", [True, False])
@torch.no_grad()
def test_cached_equals_recompute_on_100_random_inputs(prompt_tokens, window):
    model = build_model("tiny", prompt_tokens=prompt_tokens).eval()
    cfg = model.config
    batch = 100
    # Random memories stand in for 100 random frames: the decode only sees the bottlenecked features.
    memory = torch.randn(batch, cfg.num_search_tokens, cfg.hidden_dim) * 2
    prompt = torch.rand(batch, 4) if prompt_tokens else None
    prefix = model.prefix(batch, memory.device, prompt)
    assert prefix.shape == (batch, prompt_tokens + 1)
    cached = model.decode(memory, prefix, window=window, method="cached")
    recomputed = model.decode(memory, prefix, window=window, method="recompute")
    assert torch.equal(cached.tokens, recomputed.tokens)
    torch.testing.assert_close(cached.probs, recomputed.probs, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(cached.boxes, tokens_to_boxes(cached.tokens, cfg.bins))
    assert cached.tokens.min() >= 0 and cached.tokens.max() < cfg.bins
    # Distinct memories must give distinct decodes, or the test would pass on a constant decoder.
    assert len({tuple(t) for t in cached.tokens.tolist()}) > batch // 2


@torch.no_grad()
def test_window_shifts_centre_tokens_towards_the_middle():
    model = build_model("tiny").eval()
    memory = torch.randn(200, model.config.num_search_tokens, model.config.hidden_dim) * 2
    prefix = model.prefix(200, memory.device)
    centre = model.config.bins / 2
    free = model.decode(memory, prefix, window=False).tokens[:, :2].float()
    windowed = model.decode(memory, prefix, window=True).tokens[:, :2].float()
    assert (windowed - centre).abs().mean() < (free - centre).abs().mean()


@torch.no_grad()
def test_prompt_tokens_change_the_decode():
    model = build_model("tiny", prompt_tokens=4).eval()
    memory = torch.randn(50, model.config.num_search_tokens, model.config.hidden_dim)
    a = model.decode(memory, model.prefix(50, memory.device, torch.full((50, 4), 0.2)))
    b = model.decode(memory, model.prefix(50, memory.device, torch.full((50, 4), 0.8)))
    assert not torch.equal(a.probs, b.probs)


def test_token_quantisation_round_trip():
    tokens = torch.randint(0, 4000, (64, 4))
    assert torch.equal(boxes_to_tokens(tokens_to_boxes(tokens, 4000), 4000), tokens)
    assert boxes_to_tokens(torch.tensor([-0.5, 1.7]), 4000).tolist() == [0, 3999]


def test_teacher_forcing_matches_decode_hidden_states():
    """Teacher forcing on the decoded tokens reproduces the decode's probabilities (no window)."""
    model = build_model("tiny").eval()
    cfg = model.config
    search = torch.randn(2, 3, cfg.search_size, cfg.search_size)
    templates = torch.randn(2, cfg.num_templates, 3, cfg.template_size, cfg.template_size)
    result = model.generate(search, templates, window=False)
    sequence = torch.cat([model.prefix(2, search.device), result.tokens], dim=1)
    with torch.no_grad():
        logits = model(search, templates, sequence[:, :4])
    probs = logits.softmax(-1)[..., : cfg.bins]
    torch.testing.assert_close(probs.gather(-1, result.tokens[:, :, None])[..., 0], result.probs, rtol=1e-5, atol=1e-8)


def test_window_stays_fp32_when_the_model_is_converted():
    model = build_model("tiny").to(torch.bfloat16)
    assert model.window.dtype == torch.float32
    assert model.encoder.body.pos_embed.dtype == torch.bfloat16
    import numpy as np

    assert torch.equal(model.window, torch.from_numpy(np.hanning(model.config.bins)).float())
