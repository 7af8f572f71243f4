"""Model configurations as frozen dataclasses.

The four SeqTrack-shaped configurations (B256, B384, L256, L384) follow the public SeqTrack release;
``tiny`` is this project's small configuration for CPU tests and the demo.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple


@dataclass(frozen=True)
class ModelConfig:
    """Every shape and hyper-parameter of one ACTrack model.

    Encoder fields describe the frozen ViT, decoder fields the SeqTrack coordinate decoder, additive
    fields the trainable siamese conv net. ``inject_blocks=None`` injects before every encoder block.
    """

    name: str = "custom"
    # Frozen ViT encoder.
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    template_size: int = 256
    search_size: int = 256
    num_templates: int = 2
    # SeqTrack coordinate decoder.
    hidden_dim: int = 256
    dec_layers: int = 2
    dec_heads: int = 8
    dec_ffn_dim: int = 1024
    dropout: float = 0.1
    bins: int = 4000
    # Additive siamese conv net.
    additive_dim: int = 96
    inject_blocks: Optional[Tuple[int, ...]] = None
    prompt_tokens: int = 0
    # Tracker geometry.
    template_factor: float = 4.0
    search_factor: float = 4.0
    use_window: bool = True

    def __post_init__(self) -> None:
        for name in ("template_size", "search_size"):
            size = getattr(self, name)
            if size <= 0 or size % self.patch_size:
                raise ValueError(f"{name} must be a positive multiple of patch_size={self.patch_size}, got {size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        if self.hidden_dim % self.dec_heads:
            raise ValueError(f"hidden_dim={self.hidden_dim} must be divisible by dec_heads={self.dec_heads}")
        if self.num_templates < 1:
            raise ValueError(f"num_templates must be >= 1, got {self.num_templates}")
        if self.prompt_tokens not in (0, 4):
            raise ValueError(f"prompt_tokens must be 0 (SeqTrack) or 4 (previous box), got {self.prompt_tokens}")
        if self.inject_blocks is not None:
            blocks = tuple(int(b) for b in self.inject_blocks)
            bad = [b for b in blocks if not 0 <= b < self.depth]
            if bad or len(set(blocks)) != len(blocks):
                raise ValueError(f"inject_blocks must be distinct indices in [0, {self.depth}), got {blocks}")
            object.__setattr__(self, "inject_blocks", tuple(sorted(blocks)))

    @property
    def num_search_tokens(self) -> int:
        return (self.search_size // self.patch_size) ** 2

    @property
    def num_template_tokens(self) -> int:
        return (self.template_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens per frame in the encoder: search plus every template."""
        return self.num_search_tokens + self.num_templates * self.num_template_tokens

    @property
    def injected_blocks(self) -> Tuple[int, ...]:
        return tuple(range(self.depth)) if self.inject_blocks is None else self.inject_blocks

    @property
    def vocab_size(self) -> int:
        """Coordinate bins plus the end and start tokens."""
        return self.bins + 2

    @property
    def start_token(self) -> int:
        return self.bins + 1

    @property
    def end_token(self) -> int:
        return self.bins

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with ``changes`` applied; unknown keys raise ``ValueError``."""
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
        """Build a config from a mapping; a key that is not a field raises ``ValueError`` naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known keys are {sorted(known)}")
        values = dict(values)
        if values.get("inject_blocks") is not None:
            values["inject_blocks"] = tuple(values["inject_blocks"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


_VIT_BASE = dict(embed_dim=768, depth=12, num_heads=12)
_VIT_LARGE = dict(embed_dim=1024, depth=24, num_heads=16)

CONFIGS: dict[str, ModelConfig] = {
    "B256": ModelConfig(name="B256", template_size=256, search_size=256, **_VIT_BASE),
    "B384": ModelConfig(name="B384", template_size=384, search_size=384, **_VIT_BASE),
    "L256": ModelConfig(name="L256", template_size=256, search_size=256, additive_dim=128, **_VIT_LARGE),
    "L384": ModelConfig(name="L384", template_size=384, search_size=384, additive_dim=128, **_VIT_LARGE),
    # Small enough that a CPU forward takes milliseconds; the decoder keeps SeqTrack's 4000 bins.
    "tiny": ModelConfig(
        name="tiny", embed_dim=192, depth=4, num_heads=3, template_size=128, search_size=128,
        hidden_dim=128, dec_heads=4, dec_ffn_dim=512, additive_dim=32,
    ),
}


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """Named configuration (``B256``, ``B384``, ``L256``, ``L384``, ``tiny``) with optional overrides."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config name {name!r}; expected one of {sorted(CONFIGS)}")
    config = CONFIGS[name]
    return config.replace(**overrides) if overrides else config
