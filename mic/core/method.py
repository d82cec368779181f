"""A UDA method: a named set of loss terms (and the modules they own)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

from torch import nn

from mic.core import checks
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
        self.terms = nn.ModuleDict(checks.check_terms(terms, LossTerm))

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
