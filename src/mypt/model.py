"""The GPT: nanoGPT's architecture in plain PyTorch.

Kept free of Lightning, file I/O and printing so that `mypt generate` and `mypt inspect` can use it
without a Trainer, and so that the whole model reads top to bottom in one sitting.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from mypt.config import GPTConfig


class KVCache:
    """One layer's keys and values of the tokens generated so far, so that sampling a token costs one
    position's forward pass instead of the whole context's. Only for `GPT.generate`."""

    def __init__(self, config: GPTConfig) -> None:
        self.block_size = config.block_size
        self.k: torch.Tensor | None = None  # (B, nh, block_size, hs), allocated at the first update
        self.v: torch.Tensor | None = None

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at positions pos..pos+T-1; return those of positions 0..pos+T-1."""
        if self.k is None or self.v is None:  # in k's dtype: under autocast it is not the weights'
            B, nh, _, hs = k.shape
            self.k = k.new_zeros(B, nh, self.block_size, hs)
            self.v = v.new_zeros(B, nh, self.block_size, hs)
        end = pos + k.size(2)
        self.k[:, :, pos:end] = k
        self.v[:, :, pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding dim (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:  # generation: the prompt at pos 0, then one new token at a time
            k, v = cache.update(pos, k, v)
        # flash attention where the device has it; one new token attends to every cached one
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, pos)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: the input embedding and the output projection share one matrix
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are excluded by default, as in the GPT-2 paper's
        counts (the token embedding is kept because it doubles as the output layer)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        start: int = 0,
    ):
        """Returns (logits, loss). Without targets only the last position's logits are computed,
        which is all sampling needs. With `caches` (generation), idx holds the tokens at positions
        start, start+1, ...: the prompt at start 0, then one token at a time."""
        b, t = idx.size()
        if start + t > self.config.block_size:
            raise ValueError(f"sequence of length {start + t} exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)  # (t)
        tok_emb = self.transformer.wte(idx)  # (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for i, block in enumerate(self.transformer.h):
            x = block(x, None if caches is None else caches[i], start)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)  # (b, t, vocab_size)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            # slices, not x[:, [-1]]: indexing with a list copies the index to the device and waits
            logits = self.lm_head(x[:, -1:, :])  # (b, 1, vocab_size)
            loss = None
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward and backward), as in the PaLM paper appendix B."""
        cfg = self.config
        head_dim = cfg.n_embd // cfg.n_head
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * head_dim * cfg.block_size

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Extend idx (b, t) by max_new_tokens sampled tokens. Call model.eval() first.

        With `use_cache`, keys and values are kept while the text fits in block_size, so each token
        costs one position's forward pass; past block_size the window slides and every position
        changes, so each step then runs the last block_size tokens through the model, as without."""
        block_size = self.config.block_size
        use_cache = use_cache and idx.size(1) <= block_size
        caches = [KVCache(self.config) for _ in self.transformer.h] if use_cache else None
        for step in range(max_new_tokens):
            if caches is not None and idx.size(1) <= block_size:
                new = idx if step == 0 else idx[:, -1:]
                # eager even when the model is compiled: each new length would be a recompilation
                logits, _ = self.forward(new, caches=caches, start=idx.size(1) - new.size(1))
            else:
                logits, _ = self(idx[:, -block_size:])
            logits = logits[:, -1, :]
            if temperature == 0:
                idx_next = torch.argmax(logits, dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, -1:]] = -float("inf")
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx
