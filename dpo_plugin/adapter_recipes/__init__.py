"""Built-in adapter recipes: how a run wraps the policy with peft (or not).

A recipe has an optional pre-load part (checked before the model loads, e.g. QLoRA's
quantization) and a peft-config part resolved for the model at hand.
"""
