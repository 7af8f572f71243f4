"""The Triton decode (kernels/decode.py, actrack_fast.fast_decoder) against the reference KV-cached decode.

CPU: Triton's interpreter on the tiny decoder (hidden 128, 4 heads, FFN 512, 64 memory tokens), a few
samples, NaN-poisoned work buffers. GPU (``cuda``): the B256 and L384 decoder shapes on 1,000 random frames,
with and without the window, K = 0 and K = 4 prompt tokens, both cross-attention forms, single-frame paths,
persistent and per-phase launches, CUDA-graph replay.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from actrack_fast import backend, build_model, fast_decoder
from actrack_fast.config import get_config
from actrack_fast.decoder import MLP, SeqTrackDecoder, sinusoid_table
from actrack_fast.decoding import decode_cached
from kernels import decode as kernels


@dataclass
class DecoderParts:
    """What ACTrack hands its decode, without the encoder: decoder, vocabulary head, memory positions,
    query positions (prompt positions first) and the Hanning window."""

    decoder: SeqTrackDecoder
    vocab_embed: MLP
    memory_pos: torch.Tensor
    query_pos: torch.Tensor
    window: torch.Tensor
    bins: int
    memory_tokens: int
    prompt_tokens: int

    def prefix(self, batch: int, device) -> torch.Tensor:
        start = torch.full((batch, 1), self.bins + 1, dtype=torch.long, device=device)
        prompt = torch.randint(0, self.bins, (batch, self.prompt_tokens), device=device)
        return torch.cat([prompt, start], dim=1)

    def reference(self, memory, prefix, window: bool):
        return decode_cached(self.decoder, self.vocab_embed, memory, self.memory_pos, prefix, self.query_pos,
                             self.bins, self.window if window else None)

    def reference_logits(self, memory, prefix, tokens) -> torch.Tensor:
        """Teacher forcing on the decoded tokens: the logits each of the 4 steps saw, (B, 4, vocab)."""
        sequence = torch.cat([prefix, tokens[:, :3]], dim=1)
        hidden = self.decoder(sequence, memory, self.memory_pos, self.query_pos[: sequence.shape[1]])
        return self.vocab_embed(hidden[:, self.prompt_tokens :])

    def packed(self):
        shape = fast_decoder._decoder_shape(self.decoder, self.vocab_embed, self.bins)
        return shape, kernels.pack_weights(shape, fast_decoder._parameters(self.decoder, self.vocab_embed))


def make_parts(name: str, prompt_tokens: int, device="cpu", **overrides) -> DecoderParts:
    cfg = get_config(name, prompt_tokens=prompt_tokens, **overrides)
    decoder = SeqTrackDecoder(cfg).eval()
    vocab_embed = MLP(cfg.hidden_dim, cfg.hidden_dim, cfg.vocab_size, 3).eval()
    positions = decoder.embedding.position_embeddings.weight.detach()
    query_pos = torch.cat([torch.randn(prompt_tokens, cfg.hidden_dim) * 0.02, positions])
    window = torch.from_numpy(np.hanning(cfg.bins)).float()
    memory_pos = sinusoid_table(cfg.num_search_tokens, cfg.hidden_dim)[None]
    parts = DecoderParts(decoder.to(device), vocab_embed.to(device), memory_pos.to(device), query_pos.to(device),
                         window.to(device), cfg.bins, cfg.num_search_tokens, prompt_tokens)
    return parts


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert torch.isfinite(actual).all(), "non-finite values"
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def run_kernel(parts: DecoderParts, memory, prefix, window: bool, config: kernels.LaunchConfig,
               persistent: bool, poison: bool = False, memory_pos=None):
    shape, weights = parts.packed()
    workspace = kernels.DecodeWorkspace(shape, memory.shape[0], memory.shape[1], prefix.shape[1], config,
                                        memory.device)
    if poison:  # a read of anything not written this decode shows up as NaN
        for buffer in vars(workspace).values():
            if isinstance(buffer, torch.Tensor) and buffer.is_floating_point():
                buffer.fill_(float("nan"))
    tokens, probs, logits = kernels.decode(
        weights.to(memory.device), shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos,
        memory, parts.memory_pos if memory_pos is None else memory_pos, prefix, parts.window if window else None,
        persistent=persistent,
        return_logits=True, workspace=workspace, config=config)
    return tokens, probs, logits, workspace


def assert_matches_reference(parts: DecoderParts, memory, prefix, window: bool, tokens, probs, logits):
    with torch.no_grad():
        expected = parts.reference(memory, prefix, window)
        expected_logits = parts.reference_logits(memory, prefix, expected.tokens)
    assert_matches(expected, expected_logits, tokens, probs, logits)


def assert_matches(expected, expected_logits, tokens, probs, logits):
    mismatched = (tokens != expected.tokens).any(dim=1)
    assert not mismatched.any(), f"{int(mismatched.sum())} of {len(tokens)} samples decoded other tokens"
    assert relative_error(probs, expected.probs) <= 1e-5
    torch.testing.assert_close(probs, expected.probs, rtol=1e-5, atol=1e-9)
    for step in range(4):
        assert relative_error(logits[:, step], expected_logits[:, step]) <= 1e-5, f"step {step} logits"
    # Distinct frames must not all decode alike, or a constant decoder would pass (random-weight decoders
    # do repeat tokens across frames: 7 distinct decodes of 20 frames were seen at B256).
    if len(tokens) > 1:
        assert len({tuple(t) for t in tokens.tolist()}) > 1 and len(set(probs[:, 0].tolist())) > 1


# --- CPU: the interpreter ---------------------------------------------------------------------------------
# Coarse chunks keep the interpreter's operation count (its cost) down; the GPU tests use the real tiling.
INTERPRETER_TILING = dict(ffn_chunk=128, hidden_chunk=64, vocab_chunk=512, memory_chunk=32)


@pytest.mark.interpreter
@pytest.mark.parametrize("cross,persistent,prompt_tokens,window,batch,programs,tiles", [
    ("cached", True, 0, True, 3, 1, None),
    ("absorbed", False, 4, False, 2, 3, None),
    ("absorbed", True, 0, True, 1, 1, None),
    ("cached", False, 0, True, 3, 2, (4, None, None)),  # several samples per GEMV tile
    ("cached", False, 0, True, 5, 2, (1, 4, 2)),  # other tiles for the feed-forward and logits units
    # Each phase's grid sized by kernels.phase_units (fewer units than programs).
    ("cached", False, 4, True, 2, 4096, None),
    ("absorbed", False, 0, False, 3, 4096, (1, 2, 2)),
])
@torch.no_grad()
def test_interpreter_matches_reference(cross, persistent, prompt_tokens, window, batch, programs, tiles):
    parts = make_parts("tiny", prompt_tokens)
    memory = torch.randn(batch, parts.memory_tokens, parts.decoder.embedding.word_embeddings.embedding_dim) * 2
    prefix = parts.prefix(batch, "cpu")
    rows, ffn_rows, logit_rows = tiles or (kernels.default_launch_config(batch, prefix.shape[1], memory.device,
                                                                          persistent).rows, None, None)
    config = kernels.LaunchConfig(rows=rows, programs=programs, cross=cross, ffn_rows=ffn_rows,
                                  logit_rows=logit_rows, **INTERPRETER_TILING)
    tokens, probs, logits, workspace = run_kernel(parts, memory, prefix, window, config, persistent, poison=True)
    assert_matches_reference(parts, memory, prefix, window, tokens, probs, logits)
    assert workspace.sync.tolist() == [0, 0, 0, 0]  # barrier counters reset, no barrier gave up


@pytest.mark.interpreter
@torch.no_grad()
def test_interpreter_per_sample_memory_positions():
    """memory_pos of batch B (one table per sample) in both cross-attention forms, one launch per phase, with
    prompt tokens (8-row GEMV tiles whose valid rows are a prefix)."""
    parts = make_parts("tiny", 4)
    batch = 2
    memory = torch.randn(batch, parts.memory_tokens, parts.decoder.embedding.word_embeddings.embedding_dim) * 2
    memory_pos = parts.memory_pos + torch.randn(batch, *parts.memory_pos.shape[1:])
    prefix = parts.prefix(batch, "cpu")
    expected = decode_cached(parts.decoder, parts.vocab_embed, memory, memory_pos, prefix, parts.query_pos,
                             parts.bins, parts.window)
    sequence = torch.cat([prefix, expected.tokens[:, :3]], dim=1)
    hidden = parts.decoder(sequence, memory, memory_pos, parts.query_pos[: sequence.shape[1]])
    expected_logits = parts.vocab_embed(hidden[:, parts.prompt_tokens :])
    for cross in kernels.CROSS_MODES:
        config = kernels.LaunchConfig(rows=8, programs=2, cross=cross, **INTERPRETER_TILING)
        tokens, probs, logits, _ = run_kernel(parts, memory, prefix, True, config, False, poison=True,
                                              memory_pos=memory_pos)
        assert_matches(expected, expected_logits, tokens, probs, logits)


@pytest.mark.parametrize("tile", [None, *kernels.PROJECTION_TILES])
@pytest.mark.parametrize("device,name,position_batch,overrides", [
    pytest.param("cpu", "tiny", 1, {}, marks=pytest.mark.interpreter),
    pytest.param("cpu", "tiny", 5, {}, marks=pytest.mark.interpreter),
    # Three layers of width 64: the key columns (L·D = 192) are no multiple of the wider tile.
    pytest.param("cpu", "tiny", 5, dict(hidden_dim=64, dec_layers=3), marks=pytest.mark.interpreter),
    pytest.param("cuda", "B256", 1, {}, marks=pytest.mark.cuda),
    pytest.param("cuda", "L384", 5, {}, marks=pytest.mark.cuda),
])
@torch.no_grad()
def test_memory_projection_matches_the_attention_projections(device, name, position_batch, overrides, tile):
    """project_memory's keys/values against each layer's multihead_attn in-projection in float64, in its
    documented (B, M, 2, L, D) layout, with each tile; memory rows not a multiple of the tile, tiles spanning
    samples."""
    parts = make_parts(name, 0, device, **overrides)
    shape, weights = parts.packed()
    D, L, B = shape.dim, shape.layers, 5
    M = parts.memory_tokens - 24
    memory = torch.randn(B, M, D, device=device)
    memory_pos = torch.randn(position_batch, M, D, device=device)
    out = torch.full((B, M, 2, L, D), float("nan"), device=device)
    kernels.project_memory(weights.to(device), shape, memory, memory_pos, out, tile)
    for layer, block in enumerate(parts.decoder.body.layers):
        w = block.multihead_attn.in_proj_weight.detach().double()
        b = block.multihead_attn.in_proj_bias.detach().double()
        keys = (memory + memory_pos).double() @ w[D : 2 * D].T + b[D : 2 * D]
        values = memory.double() @ w[2 * D :].T + b[2 * D :]
        assert relative_error(out[:, :, 0, layer], keys) <= 1e-6
        assert relative_error(out[:, :, 1, layer], values) <= 1e-6
        torch.testing.assert_close(out[:, :, 0, layer].double(), keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, :, 1, layer].double(), values, rtol=1e-5, atol=1e-5)


@pytest.mark.interpreter
@torch.no_grad()
def test_model_decode_dispatches_on_the_backend(monkeypatch):
    model = build_model("tiny").eval()
    memory = torch.randn(2, model.config.num_search_tokens, model.config.hidden_dim)
    prefix = model.prefix(2, memory.device)
    assert backend.select("decoder", "cpu") == "reference"  # auto never picks the interpreter
    calls = []
    fast = fast_decoder.decode
    monkeypatch.setattr(fast_decoder, "decode", lambda *a, **k: calls.append(1) or fast(*a, **k))
    expected = model.decode(memory, prefix)
    assert not calls
    with backend.use_backend("triton", ops=("decoder",)):
        result = model.decode(memory, prefix)
        recomputed = model.decode(memory, prefix, method="recompute")  # SeqTrack's loop stays the reference
    assert len(calls) == 1
    assert torch.equal(result.tokens, expected.tokens) and torch.equal(recomputed.tokens, expected.tokens)
    torch.testing.assert_close(result.probs, expected.probs, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(result.boxes, expected.boxes)


def test_drop_in_decoder_has_the_reference_keys_and_picks_the_reference_on_cpu():
    cfg = get_config("tiny")
    reference = SeqTrackDecoder(cfg).eval()
    fast = fast_decoder.FastSeqTrackDecoder(cfg).eval()
    assert fast.state_dict().keys() == reference.state_dict().keys()
    fast.load_state_dict(reference.state_dict(), strict=True)
    parts = make_parts("tiny", 0)
    memory = torch.randn(3, parts.memory_tokens, cfg.hidden_dim)
    prefix = parts.prefix(3, "cpu")
    out = fast.generate(parts.vocab_embed, memory, parts.memory_pos, prefix, parts.query_pos, cfg.bins)
    expected = decode_cached(reference, parts.vocab_embed, memory, parts.memory_pos, prefix, parts.query_pos,
                             cfg.bins)
    assert torch.equal(out.tokens, expected.tokens)


def test_backend_is_explicit_only_on_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.select("decoder", "cpu", "triton") == "triton"
    assert backend.select("decoder", "cpu") == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        backend.select("decoder", "cpu", "triton")


def test_weights_are_repacked_when_a_parameter_changes():
    parts = make_parts("tiny", 0)
    shape = fast_decoder._decoder_shape(parts.decoder, parts.vocab_embed, parts.bins)
    first = fast_decoder._prepare(parts.decoder, parts.vocab_embed, shape, torch.device("cpu")).weights.clone()
    again = fast_decoder._prepare(parts.decoder, parts.vocab_embed, shape, torch.device("cpu")).weights
    assert torch.equal(first, again)
    with torch.no_grad():
        parts.decoder.body.layers[1].norm3.bias.add_(1.0)
    repacked = fast_decoder._prepare(parts.decoder, parts.vocab_embed, shape, torch.device("cpu")).weights
    layout = kernels.pack_layout(shape)
    bias = layout["GLOBAL_BASE"] - shape.dim  # the last layer's norm3 bias closes the layer blocks
    assert torch.equal(repacked[bias : bias + shape.dim], parts.decoder.body.layers[1].norm3.bias)
    assert not torch.equal(first, repacked)
    # Cross-attention values of layer 1: rows 2D..3D of its in-projection, in the stacked key/value block.
    D, L = shape.dim, shape.layers
    start = layout["GLOBAL_BASE"] + layout["GO_CROSS_KV_W"] + (L + 1) * D * D
    in_proj = parts.decoder.body.layers[1].multihead_attn.in_proj_weight
    assert torch.equal(repacked[start : start + D * D].view(D, D), in_proj[2 * D :])


def test_float32_copies_of_16_bit_parameters_follow_their_changes():
    """A bf16 parameter's float32 copy is kept between decodes and refreshed after an in-place change; other
    tensors are converted on each call, float32 contiguous ones passed through."""
    parameter = torch.nn.Parameter(torch.randn(5, 8).to(torch.bfloat16))
    first = fast_decoder._float32(parameter)
    assert first.dtype == torch.float32 and torch.equal(first, parameter.float())
    assert fast_decoder._float32(parameter) is first
    with torch.no_grad():
        parameter.mul_(2)
    again = fast_decoder._float32(parameter)
    assert again is not first and torch.equal(again, parameter.float())
    with torch.no_grad():
        parameter.data = torch.randn(5, 8).to(torch.bfloat16)  # new storage, version counter unchanged
    assert torch.equal(fast_decoder._float32(parameter), parameter.float())
    key = id(parameter)
    del parameter, first, again
    assert key not in fast_decoder._float32_copies
    plain = torch.randn(5, 8).to(torch.bfloat16)
    assert fast_decoder._float32(plain) is not fast_decoder._float32(plain)
    fp32 = torch.randn(5, 8)
    assert fast_decoder._float32(fp32).data_ptr() == fp32.data_ptr()
    assert fast_decoder._float32(fp32.t()).is_contiguous()


@pytest.mark.parametrize("change,error,match", [
    (dict(memory=torch.randn(2, 64)), ValueError, "memory must have shape"),
    (dict(memory=torch.randn(2, 64, 96)), ValueError, "memory must have shape"),
    (dict(memory_pos=torch.randn(3, 64, 128)), ValueError, "memory_pos must have batch size"),
    (dict(memory_pos=torch.randn(1, 32, 128)), ValueError, "memory_pos must have shape"),
    (dict(prefix=torch.zeros(2, 1, dtype=torch.int32)), TypeError, "prefix must hold int64"),
    (dict(prefix=torch.zeros(2, 7, dtype=torch.long)), ValueError, "at most 4 prompt tokens"),
    (dict(prefix=torch.zeros(3, 1, dtype=torch.long)), ValueError, "prefix must have shape"),
    (dict(query_pos=torch.randn(3, 128)), ValueError, "query_pos must have at least 4 rows"),
    (dict(window=torch.ones(100)), ValueError, "window must have shape"),
    (dict(memory=np.zeros((2, 64, 128))), TypeError, "memory must be a torch.Tensor"),
])
def test_bad_input_is_named(change, error, match):
    parts = make_parts("tiny", 0)
    args = dict(memory=torch.randn(2, 64, 128), memory_pos=parts.memory_pos, prefix=parts.prefix(2, "cpu"),
                query_pos=parts.query_pos, window=parts.window)
    args.update(change)
    with pytest.raises(error, match=match):
        fast_decoder.decode(parts.decoder, parts.vocab_embed, args["memory"], args["memory_pos"], args["prefix"],
                            args["query_pos"], parts.bins, args["window"])


def test_launch_config_is_checked():
    with pytest.raises(ValueError, match="rows must be a power of two"):
        kernels.LaunchConfig(rows=3, programs=1)
    with pytest.raises(ValueError, match="cross must be one of"):
        kernels.LaunchConfig(rows=1, programs=1, cross="projected")
    with pytest.raises(ValueError, match="logit_rows must be a power of two"):
        kernels.LaunchConfig(rows=1, programs=1, logit_rows=6)
    with pytest.raises(ValueError, match="dot_chunk must be a power of two"):
        kernels.LaunchConfig(rows=1, programs=1, dot_chunk=48)


def test_default_launch_configs_are_launchable():
    """Every default tiling keeps a prompt sample's padded rows in one unit (decode refuses it otherwise) and
    picks the launch mode, cross-attention form and warps by batch."""
    for batch in (1, 2, 7, 8, 9, 16, 31, 32, 33, 64, 65, 256):
        for prefix_len in (1, 5):
            for persistent in (None, True, False):
                config = kernels.default_launch_config(batch, prefix_len, torch.device("cpu"), persistent)
                assert prefix_len == 1 or min(config.tiles[:2]) >= kernels.QMAX
                if persistent is None:
                    assert config == kernels.default_launch_config(batch, prefix_len, torch.device("cpu"),
                                                                   kernels.default_persistent(batch))
                    continue
                phase_batch = not persistent and batch >= kernels.PHASE_LAUNCH_FROM_BATCH
                small = batch <= kernels.GEMV_MAX_BATCH
                assert config.cross == ("cached" if small and not phase_batch else "absorbed")
                assert config.num_warps == (kernels.PHASE_WARPS if phase_batch else 8)
    assert kernels.default_persistent(kernels.PHASE_LAUNCH_FROM_BATCH - 1)
    assert not kernels.default_persistent(kernels.PHASE_LAUNCH_FROM_BATCH)


def test_phase_units_count_the_units_of_each_phase():
    """Grid of a phase launch (the loops stride over the grid, so a wrong count costs time, not results)."""
    shape = kernels.DecoderShape(dim=256, heads=8, ffn=1024, layers=2, bins=4000)
    config = kernels.LaunchConfig(rows=8, programs=264, cross="absorbed", ffn_rows=16, logit_rows=32)
    workspace = kernels.DecodeWorkspace(shape, 64, 256, 5, config, torch.device("cpu"))
    units = {(kind, step): kernels.phase_units(kind, step, 64, 5, shape, config, workspace)
             for kind in kernels.PHASE_KINDS for step in (0, 1)}
    assert units["self", 0] == 64 * 8  # a prompt sample's 8 padded rows fill a tile: one sample per unit
    assert units["self", 1] == 64 // 8 * 8  # one row per sample after step 0: 8 samples per unit
    assert units["cross-value", 1] == units["cross-query", 1] == units["self", 1]
    assert units["cross-scores", 0] == 64 * 256 // 32  # (sample, 32-token memory chunk)
    assert units["ffn", 0] == 64 // 2 * 1024 // 32 and units["ffn", 1] == 64 // 16 * 1024 // 32
    assert units["vocab-hidden", 1] == 64 // 8 * 256 // 32
    assert units["vocab-logits", 1] == 64 // 32 * -(-4002 // 32)
    assert units["select", 1] == 64 // 8


@pytest.mark.interpreter
def test_prompt_tokens_need_tiles_of_whole_samples():
    parts = make_parts("tiny", 4)
    memory, prefix = torch.randn(1, parts.memory_tokens, parts.memory_pos.shape[-1]), parts.prefix(1, "cpu")
    shape, weights = parts.packed()
    for config in (kernels.LaunchConfig(rows=4, programs=1), kernels.LaunchConfig(rows=8, programs=1, ffn_rows=4)):
        with pytest.raises(ValueError, match="rows and ffn_rows must be >= 8"):
            kernels.decode(weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos,
                           memory, parts.memory_pos, prefix, parts.window, config=config)


@pytest.mark.interpreter
def test_interpreter_refuses_a_persistent_grid_it_would_spin_on():
    parts = make_parts("tiny", 0)
    memory, prefix = torch.randn(1, parts.memory_tokens, parts.memory_pos.shape[-1]), parts.prefix(1, "cpu")
    shape, weights = parts.packed()
    with pytest.raises(ValueError, match="persistent decode with programs=1 only"):
        kernels.decode(weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos,
                       memory, parts.memory_pos, prefix, parts.window, persistent=True,
                       config=kernels.LaunchConfig(rows=1, programs=2))


@pytest.mark.interpreter
@torch.no_grad()
def test_interpreter_flags_every_result_when_a_barrier_gave_up():
    """A barrier that gave up (error flag set, as _grid_barrier sets it) invalidates the whole decode, and the
    flag is cleared so that the next decode stands."""
    parts = make_parts("tiny", 0)
    memory = torch.randn(2, parts.memory_tokens, parts.memory_pos.shape[-1]) * 2
    prefix = parts.prefix(2, "cpu")
    config = kernels.LaunchConfig(rows=1, programs=1, **INTERPRETER_TILING)
    shape, weights = parts.packed()
    workspace = kernels.DecodeWorkspace(shape, 2, parts.memory_tokens, prefix.shape[1], config, memory.device)
    args = (weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos, memory,
            parts.memory_pos, prefix, parts.window)
    workspace.sync[2] = 1
    tokens, probs = kernels.decode(*args, persistent=True, workspace=workspace, config=config)
    assert (tokens == -1).all() and probs.isnan().all()
    assert workspace.sync.tolist() == [0, 0, 0, 0]
    tokens, probs = kernels.decode(*args, persistent=True, workspace=workspace, config=config)
    expected = parts.reference(memory, prefix, True)
    assert torch.equal(tokens, expected.tokens)
    torch.testing.assert_close(probs, expected.probs, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("registers,warps,shared,expected", [
    (255, 8, 0, 1),  # the persistent decode: the register file holds one program
    (128, 4, 0, 4),
    (64, 4, 100 * 1024, 2),  # shared memory (plus the 1 KB the driver reserves per block) limits
    (40, 1, 0, 32),  # the per-SM block limit
    (16, 32, 0, 2),  # the thread limit (2048 per SM)
])
def test_resident_programs_per_sm_follows_the_occupancy_rules(registers, warps, shared, expected):
    h100 = dict(registers_per_sm=65536, threads_per_sm=2048, shared_per_sm=233472)
    assert kernels.resident_programs_per_sm(registers, warps, shared, **h100) == expected


def test_timeline_needs_one_launch_and_its_shape():
    parts = make_parts("tiny", 0)
    memory, prefix = torch.randn(1, parts.memory_tokens, parts.memory_pos.shape[-1]), parts.prefix(1, "cpu")
    shape, weights = parts.packed()
    phases = kernels.phase_count(shape, "cached")
    args = (weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos, memory,
            parts.memory_pos, prefix, parts.window)
    good = torch.zeros(phases, 1, 2, dtype=torch.int64)
    config = kernels.LaunchConfig(rows=1, programs=1)
    for persistent, timeline in ((False, good), (True, good[:-1]), (True, good.int())):
        with pytest.raises(ValueError, match="timeline needs persistent=True"):
            kernels.decode(*args, persistent=persistent, config=config, timeline=timeline)


# --- GPU ---------------------------------------------------------------------------------------------------
@pytest.fixture
def exact_fp32():
    """The reference must run in true float32 (no tf32 matmuls)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.cuda
@torch.no_grad()
def test_gpu_persistent_grid_must_fit_and_a_failed_barrier_invalidates_the_results(exact_fp32):
    parts = make_parts("B256", 0, "cuda")
    memory, prefix = torch.randn(2, parts.memory_tokens, 256, device="cuda"), parts.prefix(2, "cuda")
    shape, weights = parts.packed()
    args = (weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos, memory,
            parts.memory_pos, prefix, parts.window)
    config = kernels.default_launch_config(2, prefix.shape[1], memory.device, True)
    # At the default 8 warps the register file holds one program per SM: four per SM cannot all be resident.
    with pytest.raises(ValueError, match="needs all of its .* programs resident at once"):
        kernels.decode(*args, persistent=True, config=replace(config, programs=4 * config.programs))
    workspace = kernels.DecodeWorkspace(shape, 2, parts.memory_tokens, prefix.shape[1], config, memory.device)
    workspace.sync[2] = 1
    tokens, probs = kernels.decode(*args, persistent=True, config=config, workspace=workspace)
    assert (tokens == -1).all() and probs.isnan().all() and workspace.sync.tolist() == [0, 0, 0, 0]
    tokens, probs = kernels.decode(*args, persistent=True, config=config, workspace=workspace)
    assert torch.equal(tokens, parts.reference(memory, prefix, True).tokens)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["B256", "L384"])
@pytest.mark.parametrize("prompt_tokens", [0, 4])
@torch.no_grad()
def test_gpu_identical_tokens_on_1000_random_frames(name, prompt_tokens, exact_fp32):
    parts = make_parts(name, prompt_tokens, "cuda")
    memory = torch.randn(1000, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(1000, "cuda")
    # One persistent launch with either cross-attention form; one launch per phase as the defaults set it up for
    # 1000 samples (16-row tiles) and for GEMV_MAX_BATCH samples (one sample per attention unit).
    launches = [(replace(kernels.default_launch_config(1000, prefix.shape[1], memory.device, True), cross=cross), True)
                for cross in kernels.CROSS_MODES]
    launches += [(kernels.default_launch_config(batch, prefix.shape[1], memory.device, False), False)
                 for batch in (1000, kernels.GEMV_MAX_BATCH)]
    for window in (True, False):
        for config, persistent in launches:
            tokens, probs, logits, workspace = run_kernel(parts, memory, prefix, window, config, persistent,
                                                          poison=True)
            assert_matches_reference(parts, memory, prefix, window, tokens, probs, logits)
            assert workspace.sync.tolist() == [0, 0, 0, 0]


@pytest.mark.cuda
@pytest.mark.parametrize("prompt_tokens", [0, 4])
@torch.no_grad()
def test_gpu_single_frame_paths(prompt_tokens, exact_fp32):
    """B = 1 (GEMV tiles), both cross-attention forms, one launch and one launch per phase, 20 frames."""
    parts = make_parts("B256", prompt_tokens, "cuda")
    frames = torch.randn(20, 1, parts.memory_tokens, 256, device="cuda")
    prefixes = [parts.prefix(1, "cuda") for _ in frames]
    for cross in kernels.CROSS_MODES:
        for persistent in (True, False):
            config = replace(kernels.default_launch_config(1, prompt_tokens + 1, frames.device, persistent),
                             cross=cross)
            results = [run_kernel(parts, m, p, True, config, persistent) for m, p in zip(frames, prefixes)]
            tokens, probs, logits = (torch.cat([r[i] for r in results]) for i in range(3))
            assert_matches_reference(parts, frames[:, 0], torch.cat(prefixes), True, tokens, probs, logits)
            assert all(r[3].sync.tolist() == [0, 0, 0, 0] for r in results)


@pytest.mark.cuda
@pytest.mark.parametrize("cross", kernels.CROSS_MODES)
@torch.no_grad()
def test_gpu_results_do_not_depend_on_the_tf32_setting(cross, exact_fp32):
    """TF32 allowed by the caller must not leak into the decode (its memory projection picks its own precision)."""
    parts = make_parts("B256", 0, "cuda")
    memory = torch.randn(8, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(8, "cuda")
    config = replace(kernels.default_launch_config(8, 1, memory.device, True), cross=cross)
    exact = run_kernel(parts, memory, prefix, True, config, True)
    torch.backends.cuda.matmul.allow_tf32 = True
    loose = run_kernel(parts, memory, prefix, True, config, True)
    assert torch.backends.cuda.matmul.allow_tf32
    for a, b in zip(exact[:3], loose[:3]):
        assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("batch", [1, 64])
@torch.no_grad()
def test_gpu_cuda_graph_replay_matches_eager(batch, exact_fp32):
    parts = make_parts("B256", 0, "cuda")
    static_memory = torch.randn(batch, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(batch, "cuda")
    run = lambda: fast_decoder.decode(parts.decoder, parts.vocab_embed, static_memory, parts.memory_pos,  # noqa: E731
                                      prefix, parts.query_pos, parts.bins, parts.window)
    run()  # compile, pack, allocate: outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    for _ in range(3):
        static_memory.copy_(torch.randn_like(static_memory))
        graph.replay()
        eager = run()
        assert torch.equal(captured.tokens, eager.tokens)
        assert torch.equal(captured.probs, eager.probs)


@pytest.mark.cuda
@torch.no_grad()
def test_gpu_timeline_is_ordered_and_changes_no_result(exact_fp32):
    parts = make_parts("B256", 0, "cuda")
    memory = torch.randn(1, parts.memory_tokens, 256, device="cuda")
    prefix = parts.prefix(1, "cuda")
    config = kernels.default_launch_config(1, 1, memory.device, True)
    plain = run_kernel(parts, memory, prefix, True, config, True)
    shape, weights = parts.packed()
    timeline = torch.zeros(kernels.phase_count(shape, config.cross), config.programs, 2, dtype=torch.int64,
                           device="cuda")
    timed = kernels.decode(weights, shape, parts.decoder.embedding.word_embeddings.weight.detach(), parts.query_pos,
                           memory, parts.memory_pos, prefix, parts.window, return_logits=True, config=config,
                           timeline=timeline)
    for a, b in zip(plain[:3], timed):
        assert torch.equal(a, b)
    start, end = timeline[..., 0], timeline[..., 1]
    assert (start > 0).all() and (end >= start).all()
    # No program starts a phase before every program has reached the barrier after the previous one.
    assert (start[1:].min(dim=1).values >= end[:-1].max(dim=1).values).all()
