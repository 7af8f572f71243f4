"""An independent, functional SeqTrack forward written from the spec, straight from a state dict.

It shares no code with actrack_fast: explicit matmuls and softmax instead of modules, so the equivalence
tests compare two implementations, not one implementation with itself.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _attention(q, k, v, heads, mask=None):
    B, Lq, d = q.shape
    Lk = k.shape[1]
    dh = d // heads
    q = q.reshape(B, Lq, heads, dh).transpose(1, 2)
    k = k.reshape(B, Lk, heads, dh).transpose(1, 2)
    v = v.reshape(B, Lk, heads, dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, Lq, d)


def encoder(sd, search, templates, heads, depth, patch=16):
    """SeqTrack ViT: tokens [search, template_1..T], one position table, pre-norm blocks, final norm."""
    p = "encoder.body."

    def embed(img):
        x = F.conv2d(img, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=patch)
        return x.flatten(2).transpose(1, 2)

    nx = (search.shape[-1] // patch) ** 2
    pos = sd[p + "pos_embed"]
    parts = [embed(search) + pos[:, :nx]]
    parts += [embed(templates[:, t]) + pos[:, nx:] for t in range(templates.shape[1])]
    x = torch.cat(parts, dim=1)
    for i in range(depth):
        b = f"{p}blocks.{i}."
        h = _ln(x, sd, b + "norm1", 1e-6)
        q, k, v = _linear(h, sd, b + "attn.qkv").chunk(3, dim=-1)
        x = x + _linear(_attention(q, k, v, heads), sd, b + "attn.proj")
        h = _ln(x, sd, b + "norm2", 1e-6)
        x = x + _linear(F.gelu(_linear(h, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    return _ln(x, sd, p + "norm", 1e-6)


def _mha(sd, name, q, k, v, heads, mask=None):
    w, b = sd[f"{name}.in_proj_weight"], sd[f"{name}.in_proj_bias"]
    d = q.shape[-1]
    out = _attention(q @ w[:d].T + b[:d], k @ w[d:2 * d].T + b[d:2 * d], v @ w[2 * d:].T + b[2 * d:], heads, mask)
    return _linear(out, sd, f"{name}.out_proj")


def decoder_hidden(sd, tokens, memory, layers, heads):
    """Post-norm DETR decoder over the whole sequence; returns the final-norm hidden states."""
    L = tokens.shape[1]
    x = _ln(sd["decoder.embedding.word_embeddings.weight"][tokens], sd, "decoder.embedding.LayerNorm", 1e-5)
    qpos = sd["decoder.embedding.position_embeddings.weight"][:L]
    mpos = sd["pos_embed"]
    mask = torch.ones(L, L, dtype=torch.bool).triu(1)
    for i in range(layers):
        b = f"decoder.body.layers.{i}."
        x = _ln(x + _mha(sd, b + "self_attn", x + qpos, x + qpos, x, heads, mask), sd, b + "norm1", 1e-5)
        x = _ln(x + _mha(sd, b + "multihead_attn", x + qpos, memory + mpos, memory, heads), sd, b + "norm2", 1e-5)
        ffn = _linear(F.relu(_linear(x, sd, b + "linear1")), sd, b + "linear2")
        x = _ln(x + ffn, sd, b + "norm3", 1e-5)
    return _ln(x, sd, "decoder.body.norm", 1e-5)


def generate(sd, search, templates, cfg, window=True):
    """SeqTrack inference: encoder, bottleneck, four recompute decode steps. Returns (tokens, probs)."""
    enc = encoder(sd, search, templates, cfg.num_heads, cfg.depth, cfg.patch_size)
    memory = _linear(enc[:, : cfg.num_search_tokens], sd, "bottleneck")
    seq = torch.full((search.shape[0], 1), cfg.bins + 1, dtype=torch.long)
    hann = torch.from_numpy(np.hanning(cfg.bins)).to(memory.dtype)
    tokens, probs = [], []
    for step in range(4):
        h = decoder_hidden(sd, seq, memory, cfg.dec_layers, cfg.dec_heads)[:, -1]
        for j in range(3):
            h = _linear(h, sd, f"vocab_embed.layers.{j}")
            h = F.relu(h) if j < 2 else h
        p = h.softmax(-1)[:, : cfg.bins]
        if window and step < 2:
            p = p * hann
        prob, tok = p.max(-1)
        tokens.append(tok)
        probs.append(prob)
        seq = torch.cat([seq, tok[:, None]], dim=1)
    return torch.stack(tokens, 1), torch.stack(probs, 1), enc
