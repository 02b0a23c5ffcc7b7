"""The GPT in plain PyTorch: a modern architecture by default, nanoGPT's one option set away.

Each option of `GPTConfig` is a few lines below, with what it buys. The defaults are the
architecture of transformers' Qwen3ForCausalLM (rotary positions, RMSNorm, per-head QK-norm, SwiGLU,
no bias, untied head); `mypt.config.NANOGPT` gives GPT-2's as nanoGPT trains it (learned positions,
LayerNorm, GELU, tied embeddings), with the parameter names of nanoGPT.

Kept free of Lightning, file I/O and printing so that `mypt generate` and `mypt inspect` can use it
without a Trainer, and so that the whole model reads top to bottom in one sitting.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from mypt.config import GPTConfig

RMS_NORM_EPS = 1e-6  # Qwen3's rms_norm_eps, so that its checkpoints compute the same here


def _rstd(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / rms(x) over the last dimension (..., 1), in x's dtype; computed in float32 at least whatever
    x's dtype (bf16 under autocast): a mean of squares needs it."""
    wide = torch.promote_types(x.dtype, torch.float32)
    rms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=wide) / math.sqrt(x.size(-1))
    return torch.rsqrt(rms.square_().add_(eps)).to(x.dtype)


def _rms_norm_backward(g: torch.Tensor, x_hat: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """The gradient at x from g, the gradient at x_hat = x * rstd: rstd * (g - x_hat * mean(g * x_hat)).
    Overwrites g."""
    dot = torch.linalg.vecdot(g, x_hat.to(g.dtype), dim=-1).unsqueeze(-1) / x_hat.size(-1)
    return g.addcmul_(x_hat, dot, value=-1).mul_(rstd)


class _RMSNormFunction(torch.autograd.Function):
    """x / rms(x) * weight over the last dimension, weight broadcast against x; the backward written
    out: torch's rms_norm runs its backward on a CPU as a chain of small ops (forward + backward at
    768 x 128 on 1 thread, best of 40: 884 us, against 388 us here; LayerNorm's fused kernels 189 us).
    On a GPU, torch.compile (mypt's default there) fuses these ops as it fuses torch's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = _rstd(x, eps)
        x_hat = x * rstd
        ctx.save_for_backward(x_hat, rstd, weight)
        return x_hat * weight.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x_hat, rstd, weight = ctx.saved_tensors
        grad_weight = grad * x_hat
        lead = grad_weight.dim() - weight.dim()
        if lead > 0:  # over the leading dims first, down contiguous rows: 14x faster on a CPU than one
            grad_weight = grad_weight.flatten(0, lead - 1).sum(0)  # reduction over all at once (17 vs 244 us)
        grad_weight = grad_weight.sum_to_size(weight.shape).to(weight.dtype)
        return _rms_norm_backward(grad * weight.to(grad.dtype), x_hat, rstd), grad_weight, None


class RMSNorm(nn.RMSNorm):
    """torch's RMSNorm (the same `weight`, ones at first) with the backward above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RMSNormFunction.apply(x, self.weight, self.eps)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    # RMSNorm: no mean to subtract and no bias (Qwen3's and Llama's); LayerNorm: GPT-2's
    if config.norm == "rmsnorm":
        return RMSNorm(dim, eps=RMS_NORM_EPS)
    return nn.LayerNorm(dim, bias=config.bias)


def rope_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin (block_size, head_dim) of each position's angle for each channel, laid out
    for `apply_rope`: channel i and i + hs/2 share an angle (transformers' "rotate_half" layout, not
    interleaved pairs), and sin is negated over the first half."""
    hs = config.head_dim
    # in float32 as transformers computes them, so that an exported model gives the same logits
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))  # (hs/2)
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)


def _turn(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + swap_halves(x) * sin, the halves swapped by two copies into one new tensor: torch.roll
    (a narrow and a cat) costs more than twice as much at these widths."""
    h = x.size(-1) // 2
    swapped = torch.empty_like(x)
    swapped[..., :h], swapped[..., h:] = x[..., h:], x[..., :h]
    return swapped.mul_(sin).addcmul_(x, cos)


class _RotaryFunction(torch.autograd.Function):
    """RoPE: the pairs (x_i, x_{i+hs/2}) turned by their angles. Its backward is the turn back, the same
    op with -sin; written out, as autograd's chain of half-width products, differences and a
    concatenation cost 1.6x as much (q and k of 12 x 64 tokens, 4 heads of 32, 1 thread)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _turn(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _turn(grad, cos, -sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, T, ..., hs) by its positions' angles: cos and sin from `rope_tables`, sliced to
    x's positions and shaped to broadcast against x (T, ..., hs)."""
    return _RotaryFunction.apply(x, cos.to(x.dtype), sin.to(x.dtype))  # a float32 table would upcast bf16


class _QKNormRotaryFunction(torch.autograd.Function):
    """QK-norm then RoPE on q and k together (B, T, 2, nh, hs), in one pass fewer each way and without
    the intermediate tensor: rms(x) is per row, so y = turn(x_hat * w) = turn(x, cos * w, sin * swap(w))
    * rstd, the weights folded into the tables. 0.95 ms against 1.27 ms for the two apart (forward and
    backward, 12 x 64 tokens, 4 heads of 32, 1 thread)."""

    @staticmethod
    def forward(ctx, x, weight, cos, sin, eps: float):  # weight (2, 1, hs); cos, sin (T, 2, nh, hs)
        rstd = _rstd(x, eps)
        w = weight.to(x.dtype)
        h = x.size(-1) // 2
        y = _turn(x, cos * w, sin * torch.cat((w[..., h:], w[..., :h]), dim=-1)).mul_(rstd)
        ctx.save_for_backward(x, rstd, weight, cos, sin)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight, cos, sin = ctx.saved_tensors
        g = _turn(grad, cos, -sin)  # the gradient at x_hat * w
        x_hat = x * rstd
        grad_weight = (g * x_hat).sum(0).sum((0, 2)).unsqueeze(1).to(weight.dtype)  # over B, then T and nh
        g.mul_(weight.to(g.dtype).expand(cos.shape[1:]).contiguous())  # the gradient at x_hat
        return _rms_norm_backward(g, x_hat, rstd), grad_weight, None, None, None


class KVCache:
    """One layer's keys and values of the tokens generated so far, so that sampling a token costs one
    position's forward pass instead of the whole context's. Only for `GPT.generate`. With RoPE the
    keys are stored rotated: a key's rotation depends on its own position alone."""

    def __init__(self, config: GPTConfig, length: int | None = None) -> None:
        # as many positions as the text will reach, at most block_size: an imported RoPE model can
        # have a context of 40,960 (Qwen3's), gigabytes of cache for a 200-token sample
        self.block_size = config.block_size if length is None else min(length, config.block_size)
        self.k: torch.Tensor | None = None  # (B, nh, length, hs), allocated at the first update
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
        # key, query, value projections for all heads, in one matmul (rows: q, then k, then v)
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # QK-norm: bounded attention logits, so higher learning rates stay stable (modded-nanogpt)
        self.q_norm = RMSNorm(config.head_dim, eps=RMS_NORM_EPS) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim, eps=RMS_NORM_EPS) if config.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
    ) -> torch.Tensor:
        """rope: cos and sin of x's positions (T, 2, nh, hs), from `GPT.rope_at`."""
        B, T, C = x.size()  # batch, sequence length, embedding dim (n_embd)
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)  # q, k, v of every head
        # split, not indexed: its backward is one concatenation, where two slices' would each fill a
        # tensor of qkv's size with zeros and copy into it (1.5% of a step at 4 x 128, context 64)
        qk, v = qkv.split((2, 1), dim=2)  # (B, T, 2, nh, hs), (B, T, 1, nh, hs)
        v = v.squeeze(2)
        # q and k together below: each elementwise op runs once on both (half the ops on a CPU)
        if self.q_norm is not None and self.k_norm is not None:  # over each head's channels
            weight = torch.stack((self.q_norm.weight, self.k_norm.weight)).unsqueeze(1)  # (2, 1, hs)
            if rope is not None:
                cos, sin = rope[0].to(qk.dtype), rope[1].to(qk.dtype)
                qk = _QKNormRotaryFunction.apply(qk, weight, cos, sin, self.q_norm.eps)
            else:
                qk = _RMSNormFunction.apply(qk, weight, self.q_norm.eps)
        elif rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:  # generation: the prompt at pos 0, then one new token at a time
            k, v = cache.update(pos, k, v)
        # flash attention where the device has it; one new token attends to every cached one
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=T > 1
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class _SwiGLUFunction(torch.autograd.Function):
    """silu(gate) * up of h = [gate | up] (the fused c_fc's output), its backward written straight into
    the two halves of one gradient: autograd's would concatenate the halves' gradients afterwards, a
    copy at these widths as slow as the silu itself."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        silu = F.silu(gate)
        ctx.save_for_backward(h, silu)
        return silu * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, silu = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        grad_h = torch.empty_like(h)
        grad_gate, grad_up = grad_h.chunk(2, dim=-1)
        torch.mul(grad, silu, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        return grad_h


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        hidden = config.mlp_width
        # SwiGLU: down(silu(gate(x)) * up(x)); gate and up in one matmul, c_fc's rows: gate, then up
        fc_out = 2 * hidden if config.mlp == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)  # "down" in transformers
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, fc_out)
        if self.kind == "swiglu":  # gated: Llama's and Qwen3's MLP
            h = _SwiGLUFunction.apply(h)
        elif self.kind == "relu2":  # ReLU squared: sparse and cheap, 1-2% better than GELU (modded-nanogpt)
            h = F.relu(h).square()
        else:  # GPT-2's, exact (erf) GELU
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, pos)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_emb == "learned":  # GPT-2's learned table; RoPE instead rotates q and k in attention
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config, config.n_embd),
        )
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # tied: one matrix for input and output, GPT-2's choice (fewer parameters); untied, the output
        # layer learns its own map (modded-nanogpt's record: 15.2 -> 10.8 minutes)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if config.pos_emb == "rope":  # computed once; not persistent: the state dict holds weights only
            cos, sin = rope_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:  # each block starts as the identity: faster early training
                    torch.nn.init.zeros_(param)  # (modded-nanogpt, nanochat)
                else:  # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer)
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
        """Parameter count. With non_embedding (the default, as the GPT-2 paper counts), the input
        embeddings, which are looked up rather than multiplied, are left out: the position table, and
        the token embedding when the head is untied (a tied one is the output layer and counts once).
        So it is the count of weights each token is multiplied by, the N of 6N FLOPs per token."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if self.config.pos_emb == "learned":
                n -= self.transformer.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.transformer.wte.weight.numel()
        return n

    def rope_at(self, start: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of positions start..start+t-1, laid out for q and k of every head (t, 2, nh, hs):
        made once a forward pass for every layer, so that each product of the rotation broadcasts over
        the batch alone (a table broadcast over the heads too takes a slower path: 1.4x the time)."""
        shape = (t, 2, self.config.n_head, self.config.head_dim)
        cos, sin = (table[start : start + t, None, None] for table in (self.rope_cos, self.rope_sin))
        return cos.expand(shape).contiguous(), sin.expand(shape).contiguous()

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
        x = self.transformer.wte(idx)  # (b, t, n_embd)
        rope = None
        if self.config.pos_emb == "learned":
            pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)  # (t)
            x = x + self.transformer.wpe(pos)  # (t, n_embd), broadcast over the batch
        else:
            rope = self.rope_at(start, t)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, None if caches is None else caches[i], start)
        x = self.transformer.ln_f(x)
        if targets is None:
            # slices, not x[:, [-1]]: indexing with a list copies the index to the device and waits
            x = x[:, -1:, :]
        logits = self.lm_head(x)  # (b, t or 1, vocab_size)
        if self.config.logit_softcap:  # smooth cap on the logits: no runaway confidence (nanochat, Gemma 2)
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward and backward), as in the PaLM paper appendix B: 6 per
        weight a token is multiplied by (num_params: every MLP matrix, the head, no lookup tables) plus
        attention's scores and weighted sum over the context. Norms, RoPE and the softcap are
        elementwise and left out, as the formula does."""
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.block_size

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
        length = idx.size(1) + max_new_tokens
        caches = [KVCache(self.config, length) for _ in self.transformer.h] if use_cache else None
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
