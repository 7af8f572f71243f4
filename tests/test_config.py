import dataclasses

import pytest

from actrack_fast import CONFIGS, ModelConfig, get_config


@pytest.mark.parametrize("name,dim,depth,heads,size", [
    ("B256", 768, 12, 12, 256), ("B384", 768, 12, 12, 384), ("L256", 1024, 24, 16, 256), ("L384", 1024, 24, 16, 384),
])
def test_seqtrack_configs_follow_the_spec(name, dim, depth, heads, size):
    cfg = get_config(name)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (dim, depth, heads)
    assert cfg.template_size == cfg.search_size == size
    assert (cfg.num_templates, cfg.dec_layers, cfg.hidden_dim, cfg.dec_heads, cfg.dec_ffn_dim) == (2, 2, 256, 8, 1024)
    assert (cfg.bins, cfg.vocab_size, cfg.start_token, cfg.end_token) == (4000, 4002, 4001, 4000)
    assert cfg.template_factor == cfg.search_factor == 4.0 and cfg.use_window
    assert cfg.prompt_tokens == 0
    assert cfg.num_search_tokens == (size // 16) ** 2


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIGS["tiny"].depth = 3


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="bogus_key"):
        ModelConfig.from_dict({**CONFIGS["tiny"].to_dict(), "bogus_key": 1})
    with pytest.raises(ValueError, match="depht"):
        get_config("tiny", depht=2)


def test_unknown_config_name():
    with pytest.raises(ValueError, match="B999"):
        get_config("B999")


def test_json_round_trip_and_overrides():
    cfg = get_config("tiny", inject_blocks=[3, 1], prompt_tokens=4)
    assert cfg.inject_blocks == (1, 3) and cfg.injected_blocks == (1, 3)
    assert ModelConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("changes,match", [
    (dict(search_size=100), "search_size"),
    (dict(num_heads=5), "num_heads"),
    (dict(inject_blocks=(0, 9)), "inject_blocks"),
    (dict(prompt_tokens=3), "prompt_tokens"),
    (dict(num_templates=0), "num_templates"),
])
def test_invalid_values_are_rejected(changes, match):
    with pytest.raises(ValueError, match=match):
        get_config("tiny", **changes)
