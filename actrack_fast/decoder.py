"""SeqTrack's autoregressive coordinate decoder (spec section 3).

Keys match SeqTrack's ``decoder.*``: ``embedding.{word_embeddings,position_embeddings,LayerNorm}``,
``body.layers.i.{self_attn,multihead_attn,linear1,linear2,norm1,norm2,norm3}``, ``body.norm``; the
vocabulary head is :class:`MLP` (``vocab_embed.layers.{0,1,2}``), owned by the model as in SeqTrack.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

NUM_COORDINATES = 4


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine/cosine position table (positions, dim); even columns sin, odd columns cos."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    angle = pos / rate
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's MLP; SeqTrack's vocabulary head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == last else F.relu(layer(x))
        return x


class DecoderEmbeddings(nn.Module):
    """Token embedding = LayerNorm(word embedding); positions enter attention as ``query_pos``."""

    def __init__(self, vocab_size: int, dim: int, max_positions: int, dropout: float) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(max_positions, dim)
        self.LayerNorm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(self.word_embeddings(tokens)))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: causal self-attention, cross-attention to the memory, ReLU FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm3(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                query_pos: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        q = tgt + query_pos
        x = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, attn_mask=causal_mask, need_weights=False)[0]))
        attended = self.multihead_attn(x + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        x = self.norm2(x + self.dropout(attended))
        return self.feed_forward(x)


class DecoderBody(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(config.hidden_dim, config.dec_heads, config.dec_ffn_dim, config.dropout)
            for _ in range(config.dec_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_dim)


class SeqTrackDecoder(nn.Module):
    """Embeddings plus the post-norm decoder body; ``forward`` is the teacher-forcing pass."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.dec_heads
        self.embedding = DecoderEmbeddings(config.vocab_size, config.hidden_dim, NUM_COORDINATES + 1, config.dropout)
        self.body = DecoderBody(config)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        """Hidden states of every position under a causal mask.

        Args:
            tokens: (B, L) input tokens.
            memory: (B, M, d) bottlenecked search features; memory_pos: (1 or B, M, d).
            query_pos: (L, d) query positions.
        Returns:
            (B, L, d) after the final LayerNorm.
        """
        L = tokens.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=tokens.device).triu(1)
        x = self.embedding(tokens)
        for layer in self.body.layers:
            x = layer(x, memory, memory_pos, query_pos, causal)
        return self.body.norm(x)


def head_split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, d) -> (B, heads, L, d / heads)."""
    B, L, d = x.shape
    return x.reshape(B, L, heads, d // heads).transpose(1, 2)


def head_merge(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, dh) -> (B, L, heads * dh)."""
    B, H, L, dh = x.shape
    return x.transpose(1, 2).reshape(B, L, H * dh)


def in_projections(attn: nn.MultiheadAttention) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The (weight, bias) of the query, key and value projections packed in ``in_proj_*``."""
    return tuple(zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))


