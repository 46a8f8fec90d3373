"""The benchmark's grids: which (method, k) variants and modes a run measures.

``paper`` is the seed study's grid (Heimes: blur, pixelate and noise at eight strengths
each) plus the other built-in methods; ``smoke`` is a small grid that runs in CI in a few
minutes; ``full`` is every method the registry knows, plugins included.
"""

from __future__ import annotations

from faceanon.methods import available_methods, get_method
from faceanon.pipeline import MODES

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

#: Identities (one gallery and one probe image each) when --bench-identities is not given.
DEFAULT_IDENTITIES = {"smoke": 40, "paper": 250, "full": 250}


def _default_ks(name: str) -> list:
    method = get_method(name)
    if not method.uses_k:
        return [None]
    return list(getattr(method, "benchmark_ks", None) or [method.k_range[0]])


def grid(name: str) -> dict[str, list]:
    """Method name -> list of k for a named grid."""
    if name == "paper":
        return {m: list(ks) for m, ks in PAPER_KS.items()}
    if name == "smoke":
        return {m: list(ks) for m, ks in SMOKE_KS.items()}
    if name == "full":
        return {m: PAPER_KS.get(m) or _default_ks(m) for m in available_methods()}
    raise ValueError(f"unknown grid {name!r}; use smoke, paper or full")


def case_id(method: str | None, k, mode: str) -> str:
    """The readable pytest id of a case: ``pixelate-k16-naive``, ``blackout-naive``, ``clear``."""
    if method is None:
        return mode
    return f"{method}-k{k}-{mode}" if k is not None else f"{method}-{mode}"


def cases(grid_name: str, *, methods: list[str] | None = None, ks: list[int] | None = None,
          modes: list[str] | None = None) -> list[tuple[str | None, object, str]]:
    """All (method, k, mode) cases of a grid, the clear baseline first."""
    chosen = grid(grid_name)
    if methods:
        unknown = sorted(set(methods) - set(available_methods()))
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}")
        chosen = {m: chosen.get(m) or _default_ks(m) for m in methods}
    modes = modes or list(MODES)
    out: list[tuple[str | None, object, str]] = []
    if "clear" in modes:
        out.append((None, None, "clear"))
    for method, method_ks in chosen.items():
        for k in method_ks:
            if ks and k is not None and k not in ks:
                continue
            for mode in modes:
                if mode != "clear":
                    out.append((method, k, mode))
    return out
