"""An example third-party plugin: the squared hinge loss ``max(0, 1 − β·Δ)²`` (a smooth SLiC)."""

import torch

import dpo_plugin


def squared_hinge(logps: dpo_plugin.PairLogps, *, beta: float = 0.1, margin: float = 1.0) -> dpo_plugin.LossOutput:
    """Squared hinge: ``max(0, margin − β·Δ)²``, Δ the log-ratio difference of DPO."""
    chosen, rejected = logps.logratios()
    losses = torch.relu(margin - beta * (chosen - rejected)) ** 2
    return dpo_plugin.LossOutput(
        losses, beta * chosen.detach(), beta * rejected.detach(), {"active": (losses > 0).float().mean()}
    )


@dpo_plugin.hookimpl
def register_losses(register):
    register("squared_hinge", squared_hinge, needs_reference=True)
