"""Networks of the zoo: a small resolution-agnostic conv U-Net and the caption encoder of the teacher.

`FlowUNet.forward(x, t, cond, s=None)` predicts a velocity (x: (N, 3, R, R) in [-1, 1] space, t: (N,) in
[0, 1], cond: (N, cond_dim) caption embedding from `WordEncoder`, or `null_cond` rows for classifier-free
guidance). The optional second time `s` (zero-initialised embedding, so a teacher ignores it) is for flow-map
students X_{s,t}. Every op supports forward-mode AD (`torch.func.jvp`): convs, GroupNorm, SiLU and a plain
softmax attention (no fused kernels). The resolution enters as log2(R), so one network serves 16 and 32.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bench.zoo import shapes


@dataclass
class UNetConfig:
    channels: tuple[int, ...] = (24, 48, 96)
    blocks: tuple[int, ...] = (1, 1, 1)
    attention: tuple[bool, ...] = (False, False, True)
    emb_dim: int = 128
    cond_dim: int = 128
    groups: int = 8

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of t (computed in float32, or float64 for float64 inputs)."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=dtype) / half)
    args = (t.reshape(-1, 1).to(dtype) * scale) * freqs.view(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over pixels with an explicit softmax (forward-mode AD friendly)."""

    def __init__(self, ch: int, groups: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        att = torch.softmax(torch.einsum("nhdi,nhdj->nhij", q, k) / math.sqrt(c // self.heads), dim=-1)
        out = torch.einsum("nhij,nhdj->nhdi", att, v).reshape(n, c, h, w)
        return x + self.out(out)


class FlowUNet(nn.Module):
    """Velocity network v(x, t | cond) (optionally v(x, s, t | cond)) for any resolution divisible by 4."""

    def __init__(self, cfg: UNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or UNetConfig()
        e, g = cfg.emb_dim, cfg.groups
        self.t_embed = nn.Sequential(nn.Linear(64, e), nn.SiLU(), nn.Linear(e, e))
        self.s_embed = nn.Sequential(nn.Linear(64, e), nn.SiLU(), nn.Linear(e, e))
        nn.init.zeros_(self.s_embed[2].weight)
        nn.init.zeros_(self.s_embed[2].bias)
        self.c_embed = nn.Linear(cfg.cond_dim, e)
        self.r_embed = nn.Linear(1, e)
        self.inp = nn.Conv2d(3, cfg.channels[0], 3, padding=1)
        # Down: `blocks[l]` residual blocks per level (each output is a skip), then a stride-2 conv.
        # Up: the same number of blocks, each eating one skip, then a 1x1 conv at low resolution and a
        # nearest upsample (cheap: spatial mixing is left to the next level's 3x3 convs).
        self.down = nn.ModuleList()
        skips: list[int] = []
        ch = cfg.channels[0]
        for level, (cout, nb) in enumerate(zip(cfg.channels, cfg.blocks, strict=True)):
            for _ in range(nb):
                self.down.append(self._block(ch, cout, cfg.attention[level]))
                ch = cout
                skips.append(ch)
            if level < len(cfg.channels) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
        self.mid1 = ResBlock(ch, ch, e, g)
        self.mid_attn = Attention(ch, g)
        self.up = nn.ModuleList()
        for level in reversed(range(len(cfg.channels))):
            cout = cfg.channels[level]
            for _ in range(cfg.blocks[level]):
                self.up.append(self._block(ch + skips.pop(), cout, cfg.attention[level]))
                ch = cout
            if level > 0:
                self.up.append(nn.ModuleList([nn.Conv2d(ch, cfg.channels[level - 1], 1),
                                              nn.Upsample(scale_factor=2, mode="nearest")]))
                ch = cfg.channels[level - 1]
        self.out_norm = nn.GroupNorm(min(g, ch), ch)
        self.out = nn.Conv2d(ch, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _block(self, cin: int, cout: int, attention: bool) -> nn.ModuleList:
        blk = nn.ModuleList([ResBlock(cin, cout, self.cfg.emb_dim, self.cfg.groups)])
        if attention:
            blk.append(Attention(cout, self.cfg.groups))
        return blk

    def embedding(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                  s: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        t = t.reshape(-1).expand(n) if t.numel() == 1 else t.reshape(n)
        emb = self.t_embed(timestep_embedding(t, 64).to(x.dtype)) + self.c_embed(cond.to(x.dtype))
        log_r = torch.full((n, 1), math.log2(x.shape[-1]) - 4.0, device=x.device, dtype=x.dtype)
        emb = emb + self.r_embed(log_r)
        if s is not None:
            s = s.reshape(-1).expand(n) if s.numel() == 1 else s.reshape(n)
            emb = emb + self.s_embed(timestep_embedding(s, 64).to(x.dtype))
        return F.silu(emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                s: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embedding(x, t, cond, s)
        h = self.inp(x)
        hs = []
        for blk in self.down:
            if isinstance(blk[0], ResBlock):
                h = blk[0](h, emb)
                for extra in blk[1:]:
                    h = extra(h)
                hs.append(h)
            else:
                h = blk[0](h)
        h = self.mid_attn(self.mid1(h, emb))
        for blk in self.up:
            if isinstance(blk[0], ResBlock):
                h = blk[0](torch.cat([h, hs.pop()], dim=1), emb)
                for extra in blk[1:]:
                    h = extra(h)
            else:
                h = blk[1](blk[0](h))
        return self.out(F.silu(self.out_norm(h)))


_WORD = re.compile(r"[a-z]+")


def caption_vocabulary() -> list[str]:
    words = {"a"}
    for text in (*shapes.SIZES, *shapes.COLOURS, *shapes.SHAPES, *shapes.POSITION_PHRASES):
        words.update(_WORD.findall(text))
    return sorted(words)


@dataclass
class TextConfig:
    vocab: list[str] = field(default_factory=caption_vocabulary)
    dim: int = 128


class WordEncoder(nn.Module):
    """Caption -> (cond_dim,) vector: a bag of learned word embeddings (unknown words ignored) and an MLP.

    The shapes grammar gives every attribute its own words, so word counts identify a caption. `null`
    is the learned unconditional embedding used for classifier-free guidance.
    """

    def __init__(self, cfg: TextConfig | None = None, out_dim: int = 128) -> None:
        super().__init__()
        self.cfg = cfg = cfg or TextConfig()
        self.index = {w: i for i, w in enumerate(cfg.vocab)}
        self.words = nn.Embedding(len(cfg.vocab), cfg.dim)
        nn.init.normal_(self.words.weight, std=0.5)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        self.null = nn.Parameter(torch.zeros(out_dim))

    def counts(self, prompts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), len(self.cfg.vocab))
        for i, p in enumerate(prompts):
            for w in _WORD.findall(p.lower()):
                if w in self.index:
                    out[i, self.index[w]] += 1
        return out

    def encode_counts(self, counts: torch.Tensor) -> torch.Tensor:
        return self.mlp(counts.to(self.words.weight) @ self.words.weight)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        return self.encode_counts(self.counts(prompts).to(self.words.weight.device))

    def null_cond(self, n: int) -> torch.Tensor:
        return self.null.unsqueeze(0).expand(n, -1)


class ShapesTeacher(nn.Module):
    """Teacher bundle: caption encoder (`text`, evaluated once per batch) + velocity network (`unet`, the NFE)."""

    def __init__(self, unet_cfg: UNetConfig | None = None, text_cfg: TextConfig | None = None) -> None:
        super().__init__()
        unet_cfg = unet_cfg or UNetConfig()
        self.text = WordEncoder(text_cfg, unet_cfg.cond_dim)
        self.unet = FlowUNet(unet_cfg)

    def config(self) -> dict:
        return {"unet": self.unet.cfg.to_dict(), "text": {"vocab": self.text.cfg.vocab, "dim": self.text.cfg.dim}}

    @classmethod
    def from_config(cls, cfg: dict) -> ShapesTeacher:
        return cls(UNetConfig.from_dict(cfg["unet"]), TextConfig(**cfg["text"]))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
