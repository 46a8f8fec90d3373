"""The benchmark's grids: which variants (method, k), modes and attacks a run measures.

``paper`` is the seed study's grid (Heimes: blur, pixelate and noise at eight strengths
each) plus the other built-in methods; ``smoke`` is a small grid that runs in CI in a few
minutes; ``full`` is every method the registry knows, plugins included. Every grid runs
the attacks ``--bench-attacks`` names (default :data:`faceanon.attacks.CHEAP_ATTACKS`),
each on the methods it applies to.
"""

from __future__ import annotations

from collections.abc import Sequence

from faceanon.protocol import Case, Mode, Variant

__all__ = ["DEFAULT_IDENTITIES", "GRIDS", "PAPER_KS", "SMOKE_KS", "cases", "grid", "variants"]

PAPER_KS = {
    "blur": [5, 10, 15, 20, 30, 35, 50, 90],
    "pixelate": [10, 15, 20, 30, 35, 50, 90, 99],
    "noise": [5, 10, 15, 20, 30, 35, 50, 90],
    "blackout": [None],
    "mask": [None],
    "ksame": [2, 3, 5, 10],
    "deepprivacy": [None],
}

SMOKE_KS = {
    "blur": [15, 90],
    "pixelate": [10, 30],
    "noise": [30, 90],
    "blackout": [None],
    "mask": [None],
    "ksame": [3],
    "deepprivacy": [None],
}

#: The grid names, in the order ``--bench-grid`` lists them.
GRIDS = ("smoke", "paper", "full")

#: Identities (one gallery and one probe image each) when --bench-identities is not given.
DEFAULT_IDENTITIES = {"smoke": 40, "paper": 250, "full": 250}


def _default_ks(name: str) -> list:
    from faceanon.methods import get_method

    method = get_method(name)
    if not method.uses_k:
        return [None]
    return list(getattr(method, "benchmark_ks", None) or [method.k_range[0]])


def grid(name: str) -> dict[str, list]:
    """Method name -> list of k for a named grid.

    Raises
    ------
    ValueError
        When ``name`` is not one of :data:`GRIDS`.
    """
    from faceanon.methods import available_methods

    if name == "paper":
        return {m: list(ks) for m, ks in PAPER_KS.items()}
    if name == "smoke":
        return {m: list(ks) for m, ks in SMOKE_KS.items()}
    if name == "full":
        return {m: PAPER_KS.get(m) or _default_ks(m) for m in available_methods()}
    raise ValueError(f"unknown grid {name!r}; use {', '.join(GRIDS)}")


def variants(grid_name: str, *, methods: Sequence[str] | None = None,
             ks: Sequence[int] | None = None) -> list[Variant]:
    """The variants of a grid, optionally only some methods and strengths.

    Parameters
    ----------
    grid_name : str
        One of :data:`GRIDS`.
    methods : sequence of str, optional
        Only these methods, in this order; a method outside the grid is measured at its
        ``benchmark_ks`` (or the low end of its ``k_range``).
    ks : sequence of int, optional
        Only these strengths (methods without k are always kept).

    Returns
    -------
    list of Variant

    Raises
    ------
    faceanon.methods.MethodError
        When a method is unknown.
    """
    from faceanon.methods import MethodError, available_methods

    chosen = grid(grid_name)
    if methods:
        unknown = sorted(set(methods) - set(available_methods()))
        if unknown:
            raise MethodError(f"unknown method(s) {', '.join(unknown)}; known: "
                              f"{', '.join(available_methods())}")
        chosen = {m: chosen.get(m) or _default_ks(m) for m in methods}
    return [Variant(method, k) for method, method_ks in chosen.items() for k in method_ks
            if not ks or k is None or k in ks]


def cases(grid_name: str, *, methods: Sequence[str] | None = None,
          ks: Sequence[int] | None = None,
          modes: Sequence[str | Mode] | None = None,
          attacks: Sequence[str] | str | None = None) -> list[Case]:
    """Every case of a grid: the clear baseline first, then each variant in each mode,
    seen by each attack that applies to its method.

    Parameters are those of :func:`variants`, plus ``modes`` (default all four) and
    ``attacks`` (names or a ``--bench-attacks`` value, see
    :func:`faceanon.attacks.parse_attacks`; default ``detect`` only, the seed study's
    attacker). The cases of one variant are consecutive, so the pipeline keeps one
    variant's images at a time.

    Returns
    -------
    list of Case

    Raises
    ------
    faceanon.attacks.AttackError
        When an attack is unknown.
    """
    from faceanon.attacks import DEFAULT_ATTACK, get_attack, parse_attacks

    chosen_modes = [Mode.parse(m) for m in modes] if modes else list(Mode)
    chosen_attacks = parse_attacks(attacks) if attacks else [DEFAULT_ATTACK]
    made = {name: get_attack(name) for name in chosen_attacks}
    out = [Case.clear()] if Mode.CLEAR in chosen_modes else []
    for variant in variants(grid_name, methods=methods, ks=ks):
        applicable = [name for name, attack in made.items()
                      if attack.applies_to(variant.method)]
        out.extend(Case(variant.method, variant.k, mode, name) for mode in chosen_modes
                   if mode is not Mode.CLEAR for name in applicable)
    return out
