"""Checkpoint I/O: SeqTrack format, ACTrack safetensors, MAE/timm ViT initialisation; strict errors."""
import pytest
import torch

from actrack_fast import (
    CheckpointError, build_model, init_encoder_from_vit, load_checkpoint, load_into, load_seqtrack_checkpoint,
    save_checkpoint,
)
from actrack_fast.checkpoint import frozen_state_dict


def crops(cfg, batch=2):
    return (torch.randn(batch, 3, cfg.search_size, cfg.search_size),
            torch.randn(batch, cfg.num_templates, 3, cfg.template_size, cfg.template_size))


def seqtrack_file(tmp_path, model, mutate=None):
    """A file in the official layout: torch.save({'net': state_dict, ...}) without the additive net."""
    net = {k: v.clone() for k, v in frozen_state_dict(model).items()}
    if mutate:
        mutate(net)
    path = tmp_path / "SEQTRACK_ep0500.pth.tar"
    torch.save({"net": net, "epoch": 500, "net_type": "SEQTRACK"}, path)
    return path


@torch.no_grad()
def test_seqtrack_round_trip(tmp_path):
    torch.manual_seed(1)
    source = build_model("tiny").eval()
    torch.manual_seed(2)
    target = build_model("tiny").eval()
    search, templates = crops(source.config)
    assert not torch.equal(source.generate(search, templates).probs, target.generate(search, templates).probs)
    load_seqtrack_checkpoint(target, seqtrack_file(tmp_path, source))
    for key, value in frozen_state_dict(source).items():
        assert torch.equal(target.state_dict()[key], value), key
    assert torch.equal(source.generate(search, templates).tokens, target.generate(search, templates).tokens)


def test_ddp_prefix_is_accepted(tmp_path):
    model = build_model("tiny")
    path = seqtrack_file(tmp_path, model, lambda net: net.update({f"module.{k}": net.pop(k) for k in list(net)}))
    load_seqtrack_checkpoint(build_model("tiny"), path)


@pytest.mark.parametrize("mutate,names", [
    (lambda net: net.pop("decoder.body.layers.1.norm3.bias"), ["missing", "decoder.body.layers.1.norm3.bias"]),
    (lambda net: net.update({"box_head.weight": torch.ones(3)}), ["unexpected", "box_head.weight"]),
    (lambda net: net.update({"bottleneck.weight": torch.ones(7, 7)}), ["shape", "bottleneck.weight"]),
])
def test_mismatched_seqtrack_checkpoint_names_the_keys(tmp_path, mutate, names):
    model = build_model("tiny")
    with pytest.raises(CheckpointError) as error:
        load_seqtrack_checkpoint(model, seqtrack_file(tmp_path, model, mutate))
    for name in names:
        assert name in str(error.value)


def test_checkpoint_of_another_config_is_rejected(tmp_path):
    path = seqtrack_file(tmp_path, build_model("tiny", search_size=64))
    with pytest.raises(CheckpointError, match="encoder.body.pos_embed"):
        load_seqtrack_checkpoint(build_model("tiny"), path)


def test_corrupt_files_raise_checkpoint_error(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_seqtrack_checkpoint(build_model("tiny"), garbage)
    truncated = tmp_path / "truncated.safetensors"
    save_checkpoint(build_model("tiny"), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="'net'"):
        torch.save({"state_dict": {}}, tmp_path / "other.pth")
        load_seqtrack_checkpoint(build_model("tiny"), tmp_path / "other.pth")


def test_pickled_objects_need_trust(tmp_path):
    model = build_model("tiny")
    path = tmp_path / "with_settings.pth"
    torch.save({"net": frozen_state_dict(model), "settings": TrainingSettings()}, path)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_seqtrack_checkpoint(build_model("tiny"), path)
    load_seqtrack_checkpoint(build_model("tiny"), path, trusted=True)


class TrainingSettings:
    """Stands in for the settings object official SeqTrack checkpoints pickle."""


@torch.no_grad()
def test_safetensors_round_trip_keeps_config_and_weights(tmp_path):
    model = build_model("tiny", prompt_tokens=4, inject_blocks=(0, 2)).eval()
    torch.nn.init.normal_(model.additive.injections["2"].weight)
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path).eval()
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    search, templates = crops(model.config)
    prompt = torch.rand(2, 4)
    assert torch.equal(model.generate(search, templates, prompt).probs, loaded.generate(search, templates, prompt).probs)
    with pytest.raises(CheckpointError, match="another config"):
        load_into(build_model("tiny"), path)


def test_safetensors_with_unknown_config_key(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad_config.safetensors"
    save_file({"x": torch.ones(1)}, str(path), metadata={"format": "actrack_fast", "config": '{"depth": 2, "warp": 1}'})
    with pytest.raises(CheckpointError, match="warp"):
        load_checkpoint(path)


@torch.no_grad()
def test_encoder_from_timm_vit_with_resized_positions():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=4, num_heads=3, num_classes=10)
    model = build_model("tiny")
    init_encoder_from_vit(model, vit.state_dict())
    body = model.encoder.body
    assert torch.equal(body.blocks[3].mlp.fc2.weight, vit.blocks[3].mlp.fc2.weight)
    assert torch.equal(body.patch_embed.proj.weight, vit.patch_embed.proj.weight)
    # 14x14 grid resized to the 8x8 search grid and the 8x8 template grid.
    nx = model.config.num_search_tokens
    assert body.pos_embed.shape == (1, 2 * nx, 192)
    grid = vit.pos_embed[:, 1:].reshape(1, 14, 14, 192)
    # Bicubic resizing keeps the mean of a smooth field close and both halves equal (same grid size).
    torch.testing.assert_close(body.pos_embed[:, :nx], body.pos_embed[:, nx:])
    assert abs(body.pos_embed.mean() - grid.mean()) < 0.01


def test_vit_with_wrong_width_is_rejected():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=96, depth=4, num_heads=3)
    with pytest.raises(CheckpointError, match="encoder.body.blocks.0.attn.qkv.weight"):
        init_encoder_from_vit(build_model("tiny"), vit.state_dict())


def test_encoder_from_mae_style_checkpoint():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=192, depth=4, num_heads=3)
    wrapped = {"model": {f"module.{k}": v for k, v in vit.state_dict().items()}, "epoch": 1599}
    model = init_encoder_from_vit(build_model("tiny"), wrapped)
    assert torch.equal(model.encoder.body.norm.weight, vit.norm.weight)
