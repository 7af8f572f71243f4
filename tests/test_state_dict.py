"""State-dict keys and shapes of every SeqTrack configuration against spec section 5."""
import pytest
import torch

from actrack_fast import ACTrack, get_config


def spec_keys(cfg):
    """Keys and shapes as spec section 5 and the architecture of sections 2-3 define them."""
    D, F = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)
    d, f, V = cfg.hidden_dim, cfg.dec_ffn_dim, cfg.bins + 2
    nx, nz = (cfg.search_size // 16) ** 2, (cfg.template_size // 16) ** 2
    keys = {
        "encoder.body.pos_embed": (1, nx + nz, D),
        "encoder.body.patch_embed.proj.weight": (D, 3, 16, 16), "encoder.body.patch_embed.proj.bias": (D,),
        "encoder.body.norm.weight": (D,), "encoder.body.norm.bias": (D,),
        "bottleneck.weight": (d, D), "bottleneck.bias": (d,), "pos_embed": (1, nx, d),
        "decoder.embedding.word_embeddings.weight": (V, d), "decoder.embedding.position_embeddings.weight": (5, d),
        "decoder.embedding.LayerNorm.weight": (d,), "decoder.embedding.LayerNorm.bias": (d,),
        "decoder.body.norm.weight": (d,), "decoder.body.norm.bias": (d,),
        "vocab_embed.layers.0.weight": (d, d), "vocab_embed.layers.0.bias": (d,),
        "vocab_embed.layers.1.weight": (d, d), "vocab_embed.layers.1.bias": (d,),
        "vocab_embed.layers.2.weight": (V, d), "vocab_embed.layers.2.bias": (V,),
    }
    for i in range(cfg.depth):
        b = f"encoder.body.blocks.{i}."
        keys.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,), b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "mlp.fc1.weight": (F, D), b + "mlp.fc1.bias": (F,), b + "mlp.fc2.weight": (D, F), b + "mlp.fc2.bias": (D,),
        })
    for i in range(cfg.dec_layers):
        b = f"decoder.body.layers.{i}."
        for attn in ("self_attn", "multihead_attn"):
            keys.update({
                f"{b}{attn}.in_proj_weight": (3 * d, d), f"{b}{attn}.in_proj_bias": (3 * d,),
                f"{b}{attn}.out_proj.weight": (d, d), f"{b}{attn}.out_proj.bias": (d,),
            })
        keys.update({b + "linear1.weight": (f, d), b + "linear1.bias": (f,), b + "linear2.weight": (d, f),
                     b + "linear2.bias": (d,)})
        for n in ("norm1", "norm2", "norm3"):
            keys.update({f"{b}{n}.weight": (d,), f"{b}{n}.bias": (d,)})
    return keys


@pytest.mark.parametrize("name", ["B256", "B384", "L256", "L384", "tiny"])
def test_keys_and_shapes_match_spec(name):
    cfg = get_config(name)
    with torch.device("meta"):
        model = ACTrack(cfg)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    seqtrack = {k: v for k, v in state.items() if not k.startswith("additive.")}
    assert seqtrack == spec_keys(cfg)
    additive = [k for k in state if k.startswith("additive.")]
    assert additive, "the additive net has parameters"
    injections = {k for k in additive if k.startswith("additive.injections.")}
    assert injections == {f"additive.injections.{i}.{p}" for i in range(cfg.depth) for p in ("weight", "bias")}
    assert state["additive.injections.0.weight"] == (cfg.embed_dim, cfg.additive_dim)
