"""What the engine asks of a model family, and the one place models are saved and loaded.

A family is a module under instdiv/models (instdiv/models/gpt.py is the reference) exposing `FAMILY`, an
instance of a `ModelFamily` subclass; `params.yaml`'s `model.kind` picks it and the rest of the `model`
section is its `Config`. The network it builds is a causal LM with this surface, which training, decoding,
saving and loading use and nothing else:

    forward(idx, targets=None) -> (logits, mean cross-entropy over targets != -100, or None)
    generate(prompt, prompt_mask, max_new_tokens, eos_id, pad_id) -> greedy tokens of left-padded prompts
    configure_optimizer(lr, weight_decay) -> torch optimizer
    num_params() -> int;  block_size -> int (the longest sequence it takes)
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch

from instdiv.config import Section
from instdiv.engine.text import Tokenizer
from instdiv.errors import DataError


class ModelFamily:
    kind: ClassVar[str]  # the value of model.kind
    Config: ClassVar[type[Section]]  # the `model` section for this kind (with `kind` among its keys)

    def build(self, cfg: Section, tokenizer: Tokenizer, block_size: int) -> torch.nn.Module:
        raise NotImplementedError

    def spec(self, network: torch.nn.Module) -> dict:
        """What rebuilds the network's shape (saved beside its weights)."""
        raise NotImplementedError

    def rebuild(self, spec: dict) -> torch.nn.Module:
        raise NotImplementedError

    def check(self, cfg: Section) -> None:
        """What a run needs from this machine (weights on disk, a GPU), checked before any long work; raise
        ConfigError naming the key and the fix."""

    def identity(self, cfg: Section) -> dict:
        """What identifies the model beyond its config (a base model's hash): part of a run's fingerprint."""
        return {}

    def export(self, network: torch.nn.Module, directory: Path) -> dict | None:
        """Write the model in its ecosystem's own form to `directory` for MLflow and return tags describing it;
        None: the engine's default export (a pickle-free pt2 program, token ids in, logits out)."""
        return None

    def tokenizer(self, cfg: Section, task_tokenizer: Tokenizer) -> Tokenizer:
        """The tokenizer the model reads: the task's own for a model trained from scratch."""
        return task_tokenizer

    def cpu_bf16(self, cfg: Section) -> bool:
        """Whether bf16 autocast is faster than fp32 on a CPU for this size (measure it: benchmarks/)."""
        return False


def save(path: Path, family: ModelFamily, network: torch.nn.Module, **extras) -> None:
    """A model file: its family, shape, weights and extras (e.g. the prompt width), no pickled objects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": family.kind, "config": family.spec(network), "state_dict": network.state_dict(),
                **extras}, path)


def load(path: Path, device="cpu", stage: str = "instdiv train") -> tuple[torch.nn.Module, dict]:
    """The network in a file `save` wrote, and the file's extras; a missing or foreign file names the stage
    that rebuilds it."""
    from instdiv import registry

    if not path.is_file():
        raise DataError(f"{path} not found; train first: {stage}")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
        family = registry.family(blob.pop("kind"))
        network = family.rebuild(blob.pop("config"))
        network.load_state_dict(blob.pop("state_dict"))
    except Exception as exc:  # a truncated or foreign file: say which and how to rebuild it
        raise DataError(f"{path} is not a model this version can read ({exc}); retrain: {stage}") from None
    return network.to(device).eval(), blob
