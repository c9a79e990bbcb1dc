"""The optimizer a run trains with (train.optimizer): the model family's AdamW, or Muon for the hidden
matrices with AdamW for the rest.

torch.optim.Muon updates 2-D parameters only and is meant for hidden layers: embeddings (and an output head
tied to them), norms and biases stay with AdamW. Lightning's automatic optimization steps one optimizer, so
the two are stepped as one (`Paired`); the learning-rate schedule scales every group of both, and Muon's
update is rescaled to AdamW's RMS (adjust_lr_fn="match_rms_adamw"), so one train.lr serves both.
"""

from __future__ import annotations

import torch


class Paired(torch.optim.Optimizer):
    """Two optimizers stepped as one: their param groups are this one's (the same dicts, so a scheduler's
    learning rate reaches both), and a checkpoint holds both states."""

    def __init__(self, first: torch.optim.Optimizer, second: torch.optim.Optimizer):
        params = [p for opt in (first, second) for g in opt.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.inner = (first, second)
        self.param_groups = [*first.param_groups, *second.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.inner:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        for opt in self.inner:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"paired": [opt.state_dict() for opt in self.inner]}

    def load_state_dict(self, state_dict):
        for opt, state in zip(self.inner, state_dict["paired"]):
            opt.load_state_dict(state)
        self.param_groups = [*self.inner[0].param_groups, *self.inner[1].param_groups]


def build(network: torch.nn.Module, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The family's own AdamW (adamw), or Muon on the hidden matrices beside AdamW on the rest (muon)."""
    if kind == "adamw":
        return network.configure_optimizer(lr, weight_decay)
    embedded = {id(p) for m in network.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    params = [p for p in network.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() == 2 and id(p) not in embedded]
    rest = [p for p in params if p.dim() != 2 or id(p) in embedded]
    muon = torch.optim.Muon(hidden, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    # decayed as the family's AdamW decays them (matrices, embeddings included; not norms or biases), so the
    # optimizer of the hidden matrices is the one thing that changes
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}]
    return Paired(muon, torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95)))
