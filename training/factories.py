"""Model factories by name: the only way a checkpoint (or an RL config) chooses code.

A checkpoint stores a factory *name* and a JSON config; ``get_factory(name)`` returns the function this
process registered under that name, and ``factory(**config)`` rebuilds the module. Names come from code:
the project registers its own models where they are defined (``vla``, ``gaussian_actor_critic``), and a
user registers theirs in their own script before loading or training::

    import training
    training.register_factory("my_policy", make_my_policy)   # make_my_policy(**config) -> torch.nn.Module

A name nobody registered is refused (``UnknownFactory``) before anything is built.
"""

from __future__ import annotations

from typing import Callable

Factory = Callable[..., object]  # factory(**config) -> torch.nn.Module

FACTORIES: dict[str, Factory] = {}

# ``module:function`` strings that checkpoints written before the registry carried, and the names they mean now
LEGACY_FACTORIES = {"training.vla:make_vla": "vla", "training.rl.policy:build_policy": "gaussian_actor_critic"}


class UnknownFactory(ValueError):
    """A factory name that no code in this process registered."""


def register_factory(name: str, fn: Factory, *, replace: bool = False) -> Factory:
    """Make ``fn`` buildable by ``name``. Raises ValueError if the name is taken by another function (unless
    ``replace``), or is not a plain name (``module:function`` strings are what the registry replaces)."""
    if not isinstance(name, str) or not name or ":" in name or not callable(fn):
        raise ValueError(f"register_factory needs a plain name and a callable, got {name!r}, {fn!r}")
    if not replace and FACTORIES.get(name, fn) is not fn:
        raise ValueError(f"model factory {name!r} is already registered (to {FACTORIES[name].__qualname__}); "
                         f"pass replace=True to change it")
    FACTORIES[name] = fn
    return fn


def get_factory(name: str, where: str = "") -> Factory:
    """The factory registered as ``name``; ``where`` (a file, a config key) prefixes the error."""
    fn = FACTORIES.get(name) if isinstance(name, str) else None
    if fn is None:
        prefix = f"{where}: " if where else ""
        raise UnknownFactory(f"{prefix}model factory {name!r} is not registered (registered: "
                             f"{', '.join(sorted(FACTORIES)) or 'none'}); register it in your own code with "
                             f"training.register_factory({name!r}, fn) before loading")
    return fn


def factory_name(name: str) -> str:
    """A registered name for ``name``, translating the legacy ``module:function`` strings of the built-ins."""
    return LEGACY_FACTORIES.get(name, name)
