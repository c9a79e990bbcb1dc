"""A GPT decoder in the spirit of nanoGPT, with batched greedy decoding over a KV cache.

Training sees right-padded sequences with plain causal attention. Decoding left-pads the prompts so they
all end at the same column; a key mask hides the padding and positions count real tokens only, so a row
sees exactly what it saw in training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from instdiv.config import Number, Section, positive
from instdiv.engine.model import ModelFamily
from instdiv.errors import ConfigError


class GPTSection(Section):
    """`model` when model.kind is gpt: the decoder's size; vocabulary and context length follow from the data."""

    section: ClassVar[str] = "model"
    # left out of study names while at their defaults
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("kind", "init", "block_size")
    kind: Literal["gpt"] = "gpt"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    dropout: Number = 0.0
    # A model file whose weights training starts from (a base from `instdiv pretrain`); its shape and
    # vocabulary must be this section's and the task's. null: random initial weights.
    init: str | None = None
    # Positions the model takes; null: the data's longest row. A base is pretrained with room for the rows
    # it will be fine-tuned on (an encrypted prompt is 2 characters longer than a plain one).
    block_size: int | None = None

    def check(self) -> None:
        positive(self, "n_layer", "n_head", "d_model")
        if self.block_size is not None:
            positive(self, "block_size")
        if self.d_model % self.n_head:
            raise ConfigError(f"model.d_model={self.d_model} is not divisible by model.n_head={self.n_head}; "
                              "pick a d_model that is a multiple of n_head")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout={self.dropout} is outside [0, 1)")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    dropout: float = 0.0



class KVCache:
    """Keys and values of every layer for up to `length` positions, filled left to right."""

    def __init__(self, cfg: GPTConfig, batch: int, length: int, device, dtype):
        shape = (cfg.n_layer, batch, cfg.n_head, length, cfg.d_model // cfg.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.n_head, self.layer, self.dropout = cfg.n_head, layer, cfg.dropout
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, mask=None, cache: KVCache | None = None):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                   for z in self.c_attn(x).split(c, dim=2))
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.c_proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, cache=None):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying, as GPT-2
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of the residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def block_size(self) -> int:
        return self.cfg.block_size

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(self, idx, positions, mask=None, cache=None):
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x, mask, cache)
        return self.lm_head(self.ln_f(x))

    def forward(self, idx, targets=None):
        """Logits for right-padded sequences, and the mean cross-entropy over targets != -100."""
        if idx.size(1) > self.cfg.block_size:
            raise ValueError(f"sequence of {idx.size(1)} tokens exceeds block_size {self.cfg.block_size}")
        logits = self._run(idx, torch.arange(idx.size(1), device=idx.device))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return logits, loss

    def _step(self, idx, valid, cache: KVCache | None):
        """Logits of the last position for a window of `idx`; `valid` marks real tokens from column 0."""
        start = cache.pos if cache is not None else 0
        end = start + idx.size(1)
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)[:, start:end]
        query = torch.arange(start, end, device=idx.device)[:, None]
        key = torch.arange(end, device=idx.device)[None, :]
        # A padded query attends to itself only, so no row of the mask is empty (which would give NaN).
        mask = ((key <= query) & valid[:, None, None, :end]) | (key == query)
        logits = self._run(idx, positions, mask, cache)
        if cache is not None:
            cache.pos = end
        return logits[:, -1]

    @torch.no_grad()
    def generate(self, prompt, prompt_mask, max_new_tokens: int, eos_id: int, pad_id: int = 0,
                 use_cache: bool = True, temperature: float = 0.0) -> torch.Tensor:
        """Greedy continuation of left-padded prompts, (batch, <= max_new_tokens); rows end with EOS or pad.
        With a temperature > 0, tokens are sampled from the softmax of logits / temperature instead (torch's
        random generator: seed it for repeatable samples).

        `use_cache=False` reruns the full forward pass for every token: the reference the cache must match.
        """
        b, p = prompt.shape
        if p + max_new_tokens - 1 > self.cfg.block_size:
            raise ValueError(f"prompt {p} + {max_new_tokens} new tokens exceed block_size {self.cfg.block_size}")
        cache = None
        if use_cache:
            # under autocast (bf16 decoding on a GPU) the keys and values are kept in its dtype: half the memory
            # traffic of fp32 at every step
            autocast = torch.is_autocast_enabled(prompt.device.type)
            dtype = torch.get_autocast_dtype(prompt.device.type) if autocast else self.wte.weight.dtype
            cache = KVCache(self.cfg, b, p + max_new_tokens, prompt.device, dtype)
        valid, seq = prompt_mask.bool(), prompt
        logits = self._step(prompt, valid, cache)
        done = torch.zeros(b, dtype=torch.bool, device=prompt.device)
        out = []
        for _ in range(max_new_tokens):
            if temperature > 0:
                token = torch.multinomial(torch.softmax(logits.float() / temperature, -1), 1)[:, 0]
            else:
                token = logits.argmax(-1)
            token = token.masked_fill(done, pad_id)
            out.append(token)
            done |= token == eos_id
            if done.all() or len(out) == max_new_tokens:
                break
            valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=valid.device)], 1)
            if use_cache:
                logits = self._step(token[:, None], valid, cache)
            else:
                seq = torch.cat([seq, token[:, None]], 1)
                logits = self._step(seq, valid, None)
        return torch.stack(out, 1)

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.95)):
        """AdamW with weight decay on matrices only (not biases, norms or embeddings' duplicates)."""
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # fused: one kernel for the whole update on a GPU (Lightning builds the optimizer after moving the model
        # there); on a CPU the default, so CPU runs stay bit for bit what they were.
        fused = all(p.is_cuda for p in params.values()) or None
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


class GPTFamily(ModelFamily):
    """The suite's GPT, trained from scratch on the task's own tokenizer."""

    kind = "gpt"
    Config = GPTSection

    def check(self, cfg: GPTSection) -> None:
        if cfg.init is not None and not Path(cfg.init).is_file():
            raise ConfigError(f"model.init={cfg.init}: no such model file; pretrain the base first (dvc repro "
                              f"pretrain@<name>, or instdiv pretrain NAME) or set model.init: null")

    def identity(self, cfg: GPTSection) -> dict:
        if cfg.init is None:
            return {}
        return {"init_sha256": hashlib.sha256(Path(cfg.init).read_bytes()).hexdigest()}

    def build(self, cfg: GPTSection, tokenizer, block_size: int) -> GPT:
        block_size = max(block_size, cfg.block_size or 0)
        if cfg.init is None:
            return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=cfg.n_layer,
                                 n_head=cfg.n_head, d_model=cfg.d_model, dropout=cfg.dropout))
        from instdiv.engine import model as models

        self.check(cfg)
        base, _ = models.load(Path(cfg.init), "cpu", "instdiv pretrain")
        if not isinstance(base, GPT):
            raise ConfigError(f"model.init={cfg.init} is not a GPT of this suite; give a model file that "
                              "`instdiv pretrain` wrote with model.kind: gpt")
        for key in ("n_layer", "n_head", "d_model"):
            if getattr(base.cfg, key) != getattr(cfg, key):
                raise ConfigError(f"model.{key}={getattr(cfg, key)} but the base {cfg.init} has "
                                  f"{getattr(base.cfg, key)}; set model.{key}: {getattr(base.cfg, key)}")
        if base.cfg.vocab_size != tokenizer.vocab_size:
            raise ConfigError(f"model.init={cfg.init} reads {base.cfg.vocab_size} tokens and this task "
                              f"{tokenizer.vocab_size}: pretrain the base on the same task's text")
        if base.cfg.block_size < block_size:
            raise ConfigError(f"model.init={cfg.init} takes {base.cfg.block_size} positions and the data needs "
                              f"{block_size}; pretrain the base with model.block_size >= {block_size}")
        for module in base.modules():  # this run's dropout, not the base's
            if isinstance(module, nn.Dropout):
                module.p = cfg.dropout
        base.cfg = dataclasses.replace(base.cfg, dropout=cfg.dropout)
        for block in base.blocks:
            block.attn.dropout = cfg.dropout
        return base.train()

    def spec(self, network: GPT) -> dict:
        return dataclasses.asdict(network.cfg)

    def rebuild(self, spec: dict) -> GPT:
        return GPT(GPTConfig(**spec))

    def cpu_bf16(self, cfg: GPTSection) -> bool:
        return cfg.d_model >= 256  # measured: 0.56x at d64, 1.31x at d256 (benchmarks/README.md)


FAMILY = GPTFamily()
