"""The one stability check of the theory: the deterministic bound ``η λ_max(H) < 2``.

Every solver calls :func:`check_learning_rate` before solving; it raises
:class:`~sgdfluct.errors.UnstableError` with the bound in the message. Mean-square stability
(the multiplicative noise, docs/theory.md §5) is stricter and is checked by the exact solver on top.
"""

from __future__ import annotations

from sgdfluct.errors import UnstableError

__all__ = ["STABILITY_RTOL", "check_learning_rate"]

#: learning rates within this relative distance of 2/λ_max count as unstable: at the bound the
#: SGD map has an eigenvalue -1 (no stationary state), and ``2/λ`` computed in floating point can
#: round to just below the bound
STABILITY_RTOL = 1e-9


def check_learning_rate(lambda_max: float, learning_rate: float, *, what: str = "H") -> None:
    """Raise :class:`UnstableError` unless ``η λ_max < 2`` (with margin :data:`STABILITY_RTOL`).

    Parameters
    ----------
    lambda_max : float
        Largest eigenvalue of the (effective) Hessian.
    learning_rate : float
        ``η``.
    what : str
        Name of the matrix in the message.

    >>> check_learning_rate(1.0, 1.0)
    >>> check_learning_rate(4.0, 0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sgdfluct.errors.UnstableError: SGD is unstable at learning_rate = 0.5: ... >= 2 ...
    """
    product = float(learning_rate) * float(lambda_max)
    if product >= 2.0 * (1.0 - STABILITY_RTOL):
        raise UnstableError(
            f"SGD is unstable at learning_rate = {learning_rate:.6g}: lambda_max({what}) = "
            f"{lambda_max:.6g}, eta * lambda_max = {product:.6g} >= 2 (the bound is "
            f"learning_rate < 2/lambda_max = {2.0 / lambda_max:.6g}); the SGD second moment "
            "diverges"
        )
