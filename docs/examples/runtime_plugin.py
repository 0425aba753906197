import torch

import dpo_plugin
from dpo_plugin.trl import DPOConfig


def squared_hinge(logps: dpo_plugin.PairLogps, *, beta: float = 0.1, margin: float = 1.0) -> dpo_plugin.LossOutput:
    """Squared hinge: ``max(0, margin − β·Δ)²``."""
    chosen, rejected = logps.logratios()
    losses = torch.relu(margin - beta * (chosen - rejected)) ** 2
    return dpo_plugin.LossOutput(losses, beta * chosen.detach(), beta * rejected.detach())


def chosen_likelihood(ctx, *, min_logp: float = -3.0) -> dpo_plugin.CheckResult:
    """The policy's mean log-probability per token of the held-out chosen answers is at least ``min_logp``."""
    scores = ctx.score_pairs("policy")
    if not scores:
        return dpo_plugin.CheckResult("chosen_likelihood", False, skipped=ctx.no_pairs_reason())
    per_token = float((scores.chosen / scores.chosen_tokens.clip(min=1)).mean())
    return dpo_plugin.CheckResult(
        "chosen_likelihood",
        per_token >= min_logp,
        {"logp_per_token": per_token},
        threshold=min_logp,
        details={"metric_help": {"logp_per_token": "mean log π(y_w)/|y_w| on the held-out pairs"}},
    )


class MyPlugin:
    @dpo_plugin.hookimpl
    def register_losses(self, register):
        register("squared_hinge", squared_hinge, needs_reference=True)

    @dpo_plugin.hookimpl
    def register_checks(self, register):
        register("chosen_likelihood", chosen_likelihood, needs_reference=False)


dpo_plugin.get_plugin_manager().register(MyPlugin(), "my_plugin")
assert dpo_plugin.losses()["squared_hinge"].plugin == "my_plugin"
assert "chosen_likelihood" in dpo_plugin.checks()

# from now on they are names like the built-ins' (in this process)
args = DPOConfig(
    output_dir="runs/squared-hinge",
    bf16=False,
    loss_type=["squared_hinge", "sft"],
    loss_params={"squared_hinge": {"margin": 2.0}},
    checks=["reward_margin", "chosen_likelihood"],
    check_params={"chosen_likelihood": {"min_logp": -4.0}},
)
