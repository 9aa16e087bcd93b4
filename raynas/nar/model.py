"""The Neural Architecture Ranker: a transformer encoder over the cell's patches, tier embeddings matched by a
transformer decoder, a tier classifier and a relative-score head (``ranker/models.py`` of AlbertiPot/nar).

Post-LN attention blocks with bias-free Q/K/V/O projections and a sinusoidal position table, as the authors'
code (itself from attention-is-all-you-need-pytorch). The decoder runs once per tier with the tier's embedding
as the query sequence and the architecture's encoding as memory; the five outputs are summed before the
classifier, so the "matching" is learnt by the decoder and the MLP. Tiers share one batched decoder pass here
(the authors loop over tiers; the result is the same).
"""

from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoid_table(n_position: int, d: int) -> torch.Tensor:
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(d) // 2) / d)[None, :]
    angle = pos / rate
    angle[:, 0::2], angle[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
    return angle.float()


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over the last two dims; any leading dims broadcast (tiers x batch)."""

    def __init__(self, d_model: int, n_head: int, d_k: int, dropout: float):
        super().__init__()
        self.n_head, self.d_k = n_head, d_k
        self.w_q = nn.Linear(d_model, n_head * d_k, bias=False)
        self.w_k = nn.Linear(d_model, n_head * d_k, bias=False)
        self.w_v = nn.Linear(d_model, n_head * d_k, bias=False)
        self.fc = nn.Linear(n_head * d_k, d_model, bias=False)
        self.dropout, self.drop = dropout, nn.Dropout(dropout)  # attention dropout inside SDPA
        self.norm = nn.LayerNorm(d_model, eps=1e-6)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_head, self.d_k)).transpose(-3, -2)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        qh, kh, vh = self._heads(self.w_q(q)), self._heads(self.w_k(kv)), self._heads(self.w_v(kv))
        lead = torch.broadcast_shapes(qh.shape[:-2], kh.shape[:-2])
        qh, kh, vh = (t.expand(*lead, *t.shape[-2:]).reshape(-1, *t.shape[-3:]) for t in (qh, kh, vh))
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=self.dropout if self.training else 0.0)
        out = out.reshape(*lead[:-1], *out.shape[-3:])
        return self.norm(q + self.drop(self.fc(out.transpose(-3, -2).flatten(-2))))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, dropout: float):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d_model, d_ffn), nn.Linear(d_ffn, d_model)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.w_2(F.relu(self.w_1(x)))))


class _Stack(nn.Module):
    """Dropout -> + positions -> LayerNorm, then n layers of [self-attn, (cross-attn), FFN]."""

    def __init__(self, cross: bool, d_model: int, d_ffn: int, n_layers: int, n_head: int, d_k: int,
                 dropout: float, n_position: int):
        super().__init__()
        self.register_buffer("pos", sinusoid_table(n_position, d_model), persistent=False)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(d_model, eps=1e-6)
        self.self_attn = nn.ModuleList(MultiHeadAttention(d_model, n_head, d_k, dropout) for _ in range(n_layers))
        self.cross_attn = nn.ModuleList(MultiHeadAttention(d_model, n_head, d_k, dropout)
                                        for _ in range(n_layers if cross else 0))
        self.ffn = nn.ModuleList(FeedForward(d_model, d_ffn, dropout) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(self.drop(x) + self.pos[: x.shape[-2]])
        for i, ffn in enumerate(self.ffn):
            x = self.self_attn[i](x, x)
            if memory is not None:
                x = self.cross_attn[i](x, memory)
            x = ffn(x)
        return x


class NARanker(nn.Module):
    """x (B, P, d, d) and tier embeddings (T, P, D) -> tier logits (B, T), encodings (B, P, D), scores (B,)."""

    def __init__(self, n_patch: int, d_patch: int, n_tier: int = 5, d_model: int = 128, d_ffn: int = 512,
                 n_layers: int = 6, n_head: int = 4, d_k: int = 32, d_tier_hidden: int = 256,
                 d_score_hidden: int = 1024, dropout: float = 0.1, n_position: int = 200, scale_logits: bool = True):
        super().__init__()
        self.n_patch, self.d_patch, self.n_tier, self.d_model = n_patch, d_patch, n_tier, d_model
        self.scale_logits = scale_logits
        self.src_prj = nn.Linear(d_patch * d_patch, d_model)
        self.trg_prj = nn.Linear(d_model, d_model)
        args = (d_model, d_ffn, n_layers, n_head, d_k, dropout, n_position)
        self.encoder, self.decoder = _Stack(False, *args), _Stack(True, *args)
        self.tier_head = nn.Sequential(nn.Linear(n_patch * d_model, d_tier_hidden, bias=False), nn.ReLU(),
                                       nn.Linear(d_tier_hidden, n_tier))
        self.score_head = nn.Sequential(nn.Linear(n_patch * d_model, d_score_hidden), nn.ReLU(),
                                        nn.Linear(d_score_hidden, 1))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.src_prj(x.flatten(-2)))

    def score(self, enc: torch.Tensor) -> torch.Tensor:
        """The relative score that ranks architectures (trained with the pairwise ranking loss)."""
        return self.score_head(enc.flatten(1)).squeeze(-1)

    def classify(self, enc: torch.Tensor, tiers: torch.Tensor) -> torch.Tensor:
        """Tier logits: every tier embedding queries the encoding; the decoded sequences are summed."""
        z = self.decoder(self.trg_prj(tiers)[:, None], enc).sum(dim=0)  # (T, 1, P, D) x (B, P, D) -> (B, P, D)
        logits = self.tier_head(z.flatten(1))
        return logits * self.d_model ** -0.5 if self.scale_logits else logits

    def forward(self, x: torch.Tensor, tiers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.encode(x)
        return self.classify(enc, tiers), enc, self.score(enc)


class TierBank:
    """Running mean of the detached encodings assigned to each tier (NAR's ``Bucket``); no gradient."""

    def __init__(self, n_tier: int, n_patch: int, d_model: int, device: torch.device | str = "cpu"):
        self.total = torch.zeros(n_tier, n_patch, d_model, device=device)
        self.count = torch.zeros(n_tier, device=device)

    def embeddings(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)[:, None, None]

    def update(self, enc: torch.Tensor, tier: torch.Tensor) -> None:
        enc = enc.detach()
        self.total.index_add_(0, tier, enc)
        self.count += torch.bincount(tier, minlength=self.count.numel()).to(self.count)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 of the paper: -sum_t y_t log softmax(logits)_t, averaged over the batch (y one-hot tiers)."""
    return -(target * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def pairwise_rank_loss(score: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """L1 of the paper (ReNAS): mean over i != j of log(1 + exp(-(s_i - s_j) * sign(y_i - y_j)))."""
    n = score.numel()
    diff = (score[:, None] - score[None, :]) * torch.sign(acc[:, None] - acc[None, :])
    off = ~torch.eye(n, dtype=torch.bool, device=score.device)
    return F.softplus(-diff)[off].sum() / (n * (n - 1))


class NoamSchedule:
    """lr = lr_mul * D^-0.5 * min(step^-0.5, step * warmup^-1.5), stepped before every optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_mul: float, d_model: int, warmup: int):
        self.optimizer, self.lr_mul, self.d_model, self.warmup, self.steps = optimizer, lr_mul, d_model, warmup, 0

    def step(self) -> float:
        self.steps += 1
        lr = self.lr_mul * self.d_model ** -0.5 * min(self.steps ** -0.5, self.steps * self.warmup ** -1.5)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr
