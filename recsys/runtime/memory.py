"""Memory checks before fits that hold dense items x items matrices (EASE-like models)."""

from __future__ import annotations

from recsys.errors import ConfigError


def dense_items_problem(
    model: str, n_items: int, max_items: int, *, matrices: int, alternatives: str
) -> str | None:
    """Why ``model`` cannot fit ``matrices`` dense float32 items x items matrices for ``n_items``
    items (beyond ``max_items``, or beyond the memory available now), or None when it can. The
    reason names both limits, how to raise the first and ``alternatives``."""
    import psutil

    needed = matrices * 4 * n_items**2
    if n_items > max_items:
        return (
            f"{model} needs a dense {n_items} x {n_items} matrix ({needed / 2**30:.1f} GB at its peak); "
            f"the catalogue exceeds max_items={max_items}. Raise it with --param max_items=N if the "
            f"memory is there, or {alternatives}"
        )
    available = psutil.virtual_memory().available
    if needed > available:
        return (
            f"{model} needs about {needed / 2**30:.1f} GB for {n_items} items but "
            f"{available / 2**30:.1f} GB is available; {alternatives}"
        )
    return None


def check_dense_items_memory(
    model: str, n_items: int, max_items: int, *, matrices: int, alternatives: str
) -> None:
    """Refuse a catalogue :func:`dense_items_problem` finds a problem with, naming it."""
    problem = dense_items_problem(model, n_items, max_items, matrices=matrices, alternatives=alternatives)
    if problem is not None:
        raise ConfigError(problem)
