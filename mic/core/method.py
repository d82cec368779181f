"""A UDA method: a named set of loss terms (and the modules they own)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

from torch import nn

from mic.core.errors import ConfigError
from mic.core.terms import LossTerm


class UDAMethod(nn.Module):
    """An ordered set of named loss terms, run by the loop in this order.

    Args:
        terms: name -> term; None leaves a term out (a config switches one off with ``null``).

    Raises:
        ConfigError: ``terms`` is no mapping, a term is not a ``LossTerm``, a name holds a ``.``
            or no term is left.
    """

    def __init__(self, terms: Mapping[str, LossTerm | None]) -> None:
        super().__init__()
        if not isinstance(terms, Mapping):  # (a list of terms: "no attribute 'items'")
            kind = type(terms).__name__
            raise ConfigError(f"UDAMethod takes name -> LossTerm ({{'mic': term}}), got a {kind}")
        kept = {name: term for name, term in terms.items() if term is not None}
        for name, term in kept.items():
            kind = type(term).__name__
            if not isinstance(name, str) or "." in name:
                problem = f"method term name {name!r} must be text without '.' (a module name)"
            elif isinstance(term, type):
                problem = (
                    f"method term '{name}' is the class {term.__name__}, not an instance of it: "
                    f"give {term.__name__}(...)"
                )
            elif not isinstance(term, LossTerm):
                problem = f"method term '{name}' is a {kind}, not a LossTerm; check its _target_"
            elif "_modules" not in vars(term) or "weight" not in vars(term):
                problem = f"{kind}.__init__ must call super().__init__(weight)"
            else:
                continue
            raise ConfigError(problem)
        if not kept:
            raise ConfigError("a method needs at least one loss term (method.terms is empty)")
        self.terms = nn.ModuleDict(kept)

    def __iter__(self) -> Iterator[tuple[str, LossTerm]]:
        return iter(self.terms.items())

    @property
    def uses_pseudo_labels(self) -> bool:
        return any(t.uses_pseudo_labels for t in self.terms.values())

    def with_terms(self, **terms: LossTerm | None) -> UDAMethod:
        """A copy of this method (its class and attributes, the terms shared) with ``terms``
        added (or replaced, or removed when None).

        Raises:
            ConfigError: None given for a name that is no term of the method (a typo).
        """
        unknown = [k for k, v in terms.items() if v is None and k not in self.terms]
        if unknown:  # with_terms(mci=None) left MIC on, silently
            raise ConfigError(
                f"with_terms: {unknown} name no term of the method, which has "
                f"{list(self.terms)}; None removes one of those"
            )
        method = copy.copy(self)  # with its own dicts of modules, parameters and buffers
        for key in ("_modules", "_parameters", "_buffers"):
            vars(method)[key] = dict(vars(self)[key])
        method.terms = UDAMethod({**dict(self.terms.items()), **terms}).terms
        return method
