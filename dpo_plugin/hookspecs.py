"""The hook specifications: the contract for plugin authors.

How to write a plugin
---------------------
A plugin is a module (or any object) with functions named after the hooks below, marked with
``dpo_plugin.hookimpl``. Each ``register_*`` hook receives a ``register`` callback: call it with a
name first, the object second, then optional metadata::

    import dpo_plugin
    from dpo_plugin import LossOutput, PairLogps

    def my_loss(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
        ...

    @dpo_plugin.hookimpl
    def register_losses(register):
        register("my_loss", my_loss, needs_reference=True)

Make it installable by declaring an entry point in the ``dpo_plugin`` group of its
``pyproject.toml``::

    [project.entry-points.dpo_plugin]
    my_plugin = "my_plugin"

``dpo-plugin plugins`` then lists it, and ``loss_type: my_loss`` in a training YAML selects it.
The built-ins are registered through these same hooks (``dpo_plugin.plugins.DEFAULT_PLUGINS``),
each kind in its own package: losses in ``dpo_plugin/loss_variants/``, reference strategies in
``dpo_plugin/reference/`` (the lifecycle in ``base.py``), adapter recipes in
``dpo_plugin/adapter_recipes/``, judges in ``dpo_plugin/evaluation/judges/``, checks in
``dpo_plugin/evaluation/checks/``, hosts in ``dpo_plugin/hosts/`` (the contract in ``base.py``).
What a registration must be is checked when it is registered
(``dpo_plugin/registry.py``, losses: ``dpo_plugin/loss_spec.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("dpo_plugin")
hookimpl = HookimplMarker("dpo_plugin")


class Register(Protocol):
    """The callback a ``register_*`` hook receives: ``register(name, obj, **metadata)``."""

    def __call__(self, name: str, obj: Any, /, *, override: bool = False, **metadata: Any) -> None: ...


@hookspec
def register_losses(register: Register) -> None:
    """Register DPO loss variants: ``register(name, fn, needs_reference=..., ...)``."""


@hookspec
def register_reference_strategies(register: Register) -> None:
    """Register reference-model strategies: ``register(name, strategy_class)``."""


@hookspec
def register_adapters(register: Register) -> None:
    """Register adapter recipes (peft configs): ``register(name, recipe)``."""


@hookspec
def register_judges(register: Register) -> None:
    """Register pairwise judges for win-rate checks: ``register(name, judge_factory)``."""


@hookspec
def register_checks(register: Register) -> None:
    """Register post-training checks: ``register(name, check_fn)``."""


@hookspec
def register_hosts(register: Register) -> None:
    """Register host trainers (trl, axolotl, …): ``register(name, host)``, a :class:`~dpo_plugin.hosts.base.Host`."""


@hookspec
def post_train(report: dict[str, Any]) -> None:
    """Called once after the checks ran, with the finished report (the content of report.json)."""
