"""The plugin manager: built-in default plugins, then the ``dpo_plugin`` entry-point group.

Environment variables (read when the manager is first built):

``DPO_PLUGIN_LOAD_PLUGINS``
    Comma-separated entry-point or distribution names: load only these third-party plugins
    (an empty value loads none). The built-ins always load.
``DPO_PLUGIN_BLOCK_PLUGINS``
    Comma-separated plugin names never to load: entry-point names, or built-in module names
    such as ``dpo_plugin.loss_variants.dpo``.
``DPO_PLUGIN_TRACE``
    Set to ``1`` to log every hook call and every registration (logger ``dpo_plugin.trace``).

An entry-point plugin that fails to load (its import raises, or it implements a hook that does
not exist), or whose ``register_*`` hook raises (say, a host whose framework is not installed), is
left out and recorded in :attr:`PluginManager.broken`; :func:`get_plugin_manager` (or the first lookup
of that kind) then raises a ConfigError naming the entry point, its distribution and the variable
that skips it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, DuplicateNameError, PluginContractError
from .loss_spec import LossSpec
from .registry import AdapterSpec, CheckSpec, HostSpec, JudgeSpec, Registry, Spec, StrategySpec

logger = logging.getLogger(__name__)
trace_logger = logging.getLogger("dpo_plugin.trace")

ENTRY_POINT_GROUP = "dpo_plugin"

DEFAULT_PLUGINS: tuple[str, ...] = (
    "dpo_plugin.loss_variants.dpo",
    "dpo_plugin.loss_variants.squared",
    "dpo_plugin.loss_variants.pointwise",
    "dpo_plugin.loss_variants.aot",
    "dpo_plugin.loss_variants.reference_free",
    "dpo_plugin.loss_variants.adaptive",
    "dpo_plugin.reference.auto",
    "dpo_plugin.reference.none",
    "dpo_plugin.reference.model",
    "dpo_plugin.reference.adapter",
    "dpo_plugin.reference.precomputed",
    "dpo_plugin.adapter_recipes.builtin",
    "dpo_plugin.evaluation.judges.builtin",
    "dpo_plugin.evaluation.checks.builtin",
    "dpo_plugin.hosts.trl.host",
    "dpo_plugin.hosts.axolotl.host",
)


@dataclass(frozen=True)
class Kind:
    """One kind of registrable item: its hook and the spec type its registry builds."""

    label: str
    hook: str
    spec_type: type[Spec]


KINDS: dict[str, Kind] = {
    "losses": Kind("loss", "register_losses", LossSpec),
    "reference_strategies": Kind("reference strategy", "register_reference_strategies", StrategySpec),
    "adapters": Kind("adapter", "register_adapters", AdapterSpec),
    "judges": Kind("judge", "register_judges", JudgeSpec),
    "checks": Kind("check", "register_checks", CheckSpec),
    "hosts": Kind("host", "register_hosts", HostSpec),
}


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to load, or whose hook raised: where it comes from and why.

    ``target`` is the entry point's value (``module:attribute``); empty for a plugin registered in code.
    """

    name: str
    target: str
    distribution: str
    version: str
    error: str

    @property
    def message(self) -> str:
        if not self.target:
            return (
                f"The plugin {self.name!r} failed to load: {self.error}. Fix it, or skip it with "
                f"DPO_PLUGIN_BLOCK_PLUGINS={self.name}."
            )
        return (
            f"The plugin {self.name!r} (entry point {self.name} = {self.target}, from {self.distribution} "
            f"{self.version}) failed to load: {self.error}. Fix or uninstall it (pip uninstall {self.distribution}), "
            f"or skip it with DPO_PLUGIN_BLOCK_PLUGINS={self.name}."
        )


def _one_line(error: BaseException) -> str:
    """``Type: message`` on one line, without a closing full stop."""
    text = " ".join(str(error).split()).rstrip(".")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _names(env_value: str) -> set[str]:
    return {_normalise(n) for n in env_value.split(",") if n.strip()}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registries built from the ``register_*`` hooks (rebuilt on change)."""

    def __init__(self) -> None:
        super().__init__("dpo_plugin")
        self.add_hookspecs(hookspecs)
        self._registries: dict[str, Registry[Any]] = {}
        #: plugin name → (distribution name, version) for plugins loaded from entry points
        self.distributions: dict[str, tuple[str, str]] = {}
        #: entry-point name → (its target, distribution, version), for the message when its hook raises
        self.origins: dict[str, tuple[str, str, str]] = {}
        #: plugin name → why it failed to load, or why its hook raised (it is not registered)
        self.broken: dict[str, BrokenPlugin] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        self._registries.clear()
        return super().register(plugin, name)

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        self._registries.clear()
        return super().unregister(plugin, name)

    def is_blocked(self, name: str) -> bool:
        """Whether ``name`` is blocked as written or in its normalised spelling (``My_Plugin`` = ``my-plugin``)."""
        return super().is_blocked(name) or super().is_blocked(_normalise(name))

    def registry(self, kind: str, *, allow_broken: bool = False) -> Registry[Any]:
        """The registry of ``kind`` (a key of :data:`KINDS`), built by calling its hook plugin by plugin.

        A plugin whose hook raises (anything but a contract error, which names the plugin itself) is
        left out and recorded in :attr:`broken`; then, unless ``allow_broken``, a ConfigError names it.
        """
        if kind not in self._registries:
            failed = self._build_registry(kind)
            for name, error in failed.items():
                target, distribution, version = self.origins.get(name, ("", "", ""))
                self.unregister(name=name)  # every registry is rebuilt without it
                self.broken[name] = BrokenPlugin(
                    name, target, distribution, version, f"{KINDS[kind].hook} raised {error}"
                )
            if failed and not allow_broken:
                raise ConfigError(" ".join(self.broken[name].message for name in failed))
            if failed:
                return self.registry(kind, allow_broken=True)
        return self._registries[kind]

    def _build_registry(self, kind: str) -> dict[str, str]:
        """Build the registry of ``kind``; the plugins whose hook raised, with the error on one line."""
        spec = KINDS[kind]
        registry: Registry[Any] = Registry(spec.label, spec.spec_type)
        caller = getattr(self.hook, spec.hook)
        plugins = self.get_plugins()
        failed = {}
        for impl in caller.get_hookimpls():
            # Call each plugin's implementation alone so the registry knows who registered what;
            # going through pluggy's caller keeps DPO_PLUGIN_TRACE's monitoring in the loop.
            only = self.subset_hook_caller(spec.hook, plugins - {impl.plugin})
            try:
                only(register=registry.registrar(impl.plugin_name))
            except (PluginContractError, DuplicateNameError):
                raise  # what it registered breaks the contract: the registry's own error names the plugin
            except Exception as error:  # a plugin's hook may raise anything: it is left out, named
                failed[impl.plugin_name] = _one_line(error)
        if not failed:
            trace_logger.debug("%s: %s", kind, ", ".join(f"{n} ({s.plugin})" for n, s in registry.items()))
            self._registries[kind] = registry
        return failed

    def check_pending(self) -> None:
        """pluggy's check that every hook implementation names a known hook, with a suggestion."""
        try:
            super().check_pending()
        except pluggy.PluginValidationError as error:
            hooks = [n for n in vars(hookspecs) if n.startswith(("register_", "post_"))]
            unknown = re.search(r"unknown hook '([^']+)'", str(error))
            close = difflib.get_close_matches(unknown.group(1), hooks, n=1) if unknown else []
            hint = f" Did you mean {close[0]!r}?" if close else ""
            what = (
                f"plugin {self.get_name(error.plugin)!r} implements unknown hook {unknown.group(1)!r}"
                if unknown
                else error
            )
            raise pluggy.PluginValidationError(
                error.plugin, f"{what}.{hint} The hooks are: {', '.join(hooks)}."
            ) from None

    def load_default_plugins(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            if not self.is_blocked(module_name) and not self.has_plugin(module_name):
                self.register(importlib.import_module(module_name), name=module_name)

    def load_entry_point_plugins(self, only: set[str] | None = None) -> None:
        """Register the ``dpo_plugin`` entry points (only those named in ``only``, when given).

        One that fails to import or names an unknown hook is left out and recorded in :attr:`broken`.
        """
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or self.is_blocked(ep.name) or self.has_plugin(ep.name):
                    continue
                dist_name = dist.metadata["Name"] or ""
                if only is not None and not ({_normalise(ep.name), _normalise(dist_name)} & only):
                    continue
                if self.is_blocked(_normalise(dist_name)) or ep.name in self.broken:
                    continue
                try:
                    self.register(ep.load(), name=ep.name)
                    self.check_pending()  # the plugins before it passed, so a failure is this one's
                except Exception as error:  # a plugin's import may raise anything
                    if self.has_plugin(ep.name):
                        self.unregister(name=ep.name)
                    self.broken[ep.name] = BrokenPlugin(ep.name, ep.value, dist_name, dist.version, _one_line(error))
                    continue
                self.distributions[ep.name] = (dist_name, dist.version)
                self.origins[ep.name] = (ep.value, dist_name, dist.version)

    def raise_for_broken(self) -> None:
        """A ConfigError naming every entry point that failed to load, if any did."""
        if self.broken:
            raise ConfigError(" ".join(broken.message for broken in self.broken.values()))


_manager: PluginManager | None = None


def get_plugin_manager(*, allow_broken: bool = False) -> PluginManager:
    """The process-wide plugin manager, with built-ins and entry-point plugins loaded and checked.

    An entry point that failed to load is a ConfigError (see :attr:`PluginManager.broken`), unless
    ``allow_broken``: then the manager holds the other plugins (``dpo-plugin plugins`` lists them).
    """
    global _manager
    if _manager is None:
        _manager = _build_manager()
    if not allow_broken:
        _manager.raise_for_broken()
    return _manager


def _build_manager() -> PluginManager:
    pm = PluginManager()
    for name in os.environ.get("DPO_PLUGIN_BLOCK_PLUGINS", "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
            pm.set_blocked(_normalise(name))
    if os.environ.get("DPO_PLUGIN_TRACE", "").strip() not in ("", "0", "false"):
        pm.trace.root.setwriter(lambda message: trace_logger.info(message.rstrip()))
        pm.enable_tracing()
        trace_logger.setLevel(logging.DEBUG)
    pm.load_default_plugins()
    load = os.environ.get("DPO_PLUGIN_LOAD_PLUGINS")
    pm.load_entry_point_plugins(only=None if load is None else _names(load))
    pm.check_pending()
    return pm


def reset_plugin_manager() -> None:
    """Forget the process-wide manager, so the next call rebuilds it (re-reading the environment)."""
    global _manager
    _manager = None


def _registry(kind: str) -> Registry[Any]:
    return get_plugin_manager().registry(kind)


def losses() -> Registry[LossSpec]:
    """Read-only mapping of every registered loss name to its :class:`~dpo_plugin.registry.LossSpec`."""
    return _registry("losses")


def reference_strategies() -> Registry[StrategySpec]:
    """Read-only mapping of every registered reference-strategy name to its spec."""
    return _registry("reference_strategies")


def adapters() -> Registry[AdapterSpec]:
    """Read-only mapping of every registered adapter-recipe name to its spec."""
    return _registry("adapters")


def judges() -> Registry[JudgeSpec]:
    """Read-only mapping of every registered judge name to its spec."""
    return _registry("judges")


def checks() -> Registry[CheckSpec]:
    """Read-only mapping of every registered post-training check name to its spec."""
    return _registry("checks")


def hosts() -> Registry[HostSpec]:
    """Read-only mapping of every registered host name (``trl``, ``axolotl``, …) to its spec."""
    return _registry("hosts")
