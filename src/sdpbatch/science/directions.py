"""Calibration directions: the sky model's brightest components clustered, and facets.

Direction-dependent calibration (DP3 DDECal with ``directions``, WSClean's facets) solves one
gain per direction; each direction is a cluster of bright components and owns the part of the
sky nearest to its centre (a Voronoi facet, as DP3 and WSClean draw them).

- :func:`cluster_directions`: k-means on the (l, m) positions of the brightest components,
  weighted by flux, started from the brightest of them at least a given separation apart
  (deterministic: no random seed).
- :func:`facet_labels`: the direction each position belongs to (nearest centre).
"""

from __future__ import annotations

import numpy as np

CANDIDATES_PER_DIRECTION = 10
"""The brightest ``CANDIDATES_PER_DIRECTION x ndirections`` components are clustered; fainter
ones only take the facet they fall in."""


def facet_labels(l: np.ndarray, m: np.ndarray, centres: np.ndarray) -> np.ndarray:  # noqa: E741
    """(n,) int: the index of the centre nearest to each position (its Voronoi facet).

    ``l``, ``m`` (n,) direction cosines; ``centres`` (ndir, 2) their (l, m).  On a tie the
    first centre wins.
    """
    pos = np.column_stack([np.ravel(l), np.ravel(m)]).astype(np.float64)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    d2 = ((pos[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(d2, axis=1)


def cluster_directions(
    l: np.ndarray,  # noqa: E741
    m: np.ndarray,
    flux: np.ndarray,
    ndirections: int,
    *,
    min_separation: float = 0.0,
    iterations: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster components into at most ``ndirections`` calibration directions.

    Parameters
    ----------
    l, m : (n,) direction cosines of the components about the phase centre.
    flux : (n,) their flux (Jy; only relative values matter; |flux| is used).
    ndirections : directions wanted (>= 1); fewer come back when fewer components are more
        than ``min_separation`` apart (or distinct).
    min_separation : the starting centres are at least this far apart (direction cosines):
        the pixels of one cleaned source do not make several directions.
    iterations : most Lloyd iterations (stops earlier once the labels settle).

    Returns
    -------
    centres : (ndir, 2) flux-weighted mean (l, m) of each cluster, brightest cluster first.
    labels : (n,) int, the facet (nearest centre) of every component.

    The brightest ``CANDIDATES_PER_DIRECTION x ndirections`` components are clustered,
    starting from the brightest components, each taken when it lies beyond
    ``min_separation`` of those taken before (and is not at the same position); each centre
    is the flux-weighted mean of its members, so a bright source pulls its centre onto itself
    (a centre without members stays where it started).
    """
    if ndirections < 1:
        raise ValueError(f"ndirections must be >= 1, got {ndirections}")
    l, m = np.ravel(l).astype(np.float64), np.ravel(m).astype(np.float64)  # noqa: E741
    weight = np.abs(np.ravel(flux).astype(np.float64))
    if l.size == 0:
        raise ValueError("cluster_directions: no component to cluster")
    order = np.argsort(-weight, kind="stable")
    centres = _separated(np.column_stack([l[order], m[order]]), ndirections, min_separation)
    order = order[: CANDIDATES_PER_DIRECTION * ndirections]
    pos, w = np.column_stack([l[order], m[order]]), weight[order]
    labels = None
    for _ in range(iterations):
        new = facet_labels(pos[:, 0], pos[:, 1], centres)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        centres = np.array([_weighted_mean(pos, w, labels == k, c) for k, c in enumerate(centres)])
    brightness = np.array([w[facet_labels(pos[:, 0], pos[:, 1], centres) == k].sum()
                           for k in range(len(centres))])  # fmt: skip
    centres = centres[np.argsort(-brightness, kind="stable")]
    return centres, facet_labels(l, m, centres)


def _separated(pos: np.ndarray, count: int, separation: float) -> np.ndarray:
    """The first ``count`` of ``pos`` (n, 2) each beyond ``separation`` of (and not equal to)
    those taken before."""
    taken = [pos[0]]
    for p in pos[1:]:
        if len(taken) == count:
            break
        d = np.hypot(*(np.array(taken) - p).T)
        if np.all(d > separation) and np.all(d > 0):
            taken.append(p)
    return np.array(taken)


def _weighted_mean(pos: np.ndarray, w: np.ndarray, member: np.ndarray, old: np.ndarray):
    """Flux-weighted mean position of the members (``old`` if none has flux)."""
    total = w[member].sum()
    if total <= 0:
        return old
    return (pos[member] * w[member, None]).sum(axis=0) / total


def radec_of(l: np.ndarray, m: np.ndarray, phase_centre: tuple[float, float]) -> np.ndarray:  # noqa: E741
    """(n, 2) (ra, dec) rad of direction cosines (l, m) about ``phase_centre`` (ra0, dec0) rad:
    the inverse of :func:`sdpbatch.science.skymodel.lmn` (l east, m north)."""
    l, m = np.ravel(l).astype(np.float64), np.ravel(m).astype(np.float64)  # noqa: E741
    n = np.sqrt(np.maximum(0.0, 1.0 - l * l - m * m))
    ra0, dec0 = phase_centre
    x = n * np.cos(dec0) - m * np.sin(dec0)  # along the centre's meridian plane, towards ra0
    dec = np.arcsin(np.clip(m * np.cos(dec0) + n * np.sin(dec0), -1.0, 1.0))
    ra = (ra0 + np.arctan2(l, x)) % (2 * np.pi)
    return np.column_stack([ra, dec])
