"""The IMT step of an exported pipeline, checked exactly against its definition.

    x_t = clamp(x + m * eps * sign(g), 0, 1),  m = 1 (IMT), factor inside the band else 1 (IMT+), 0 (off)

A sign check cannot see a step's size, and an error bound on x_t cannot tell a legitimately flipped sign
(a near-zero gradient entry, moved 2 * m * eps by rounding) from a wrong step. So the step is checked for
what it must be: wherever the graph and the reference gradient agree on a pixel's sign and the step is not
clamped, |x_t - x| equals m * eps to float32 rounding (the step and the clamp run in float32 in every
graph, float16 ones included); the example's m comes from the reference's band decision, and the graph may
take the other band's m only where the reference p_natural lies within the graph's own p_natural error (plus
float32 rounding) of a band edge; and no pixel leaves [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imt import IMTConfig

STEP_TOL = 1e-6  # float32 carries 6e-8 at 1.0: 16 ulps of room for x + m*eps and the clamp
P_ROUND = 1e-6  # float32 rounding of a sigmoid inside the band


@dataclass
class StepCheck:
    """What the exact step check found on one graph's transformed images."""

    mode: str
    examples: int
    examples_in_band: int  # the reference's decision: m = factor (IMT+ only)
    pixels_checked: int
    pixels_wrong: int  # checked pixels whose |x_t - x| matches neither the reference's m nor a permitted one
    examples_wrong_size: int
    max_step_err: float
    examples_other_band: int  # took the other band's m, p_natural not near an edge: a wrong band decision
    examples_near_edge: int  # took the other band's m where the reference p_natural is at an edge: accepted
    pixels_outside: int  # outside [0, 1] by more than rounding: the clamp is missing
    max_outside: float

    def failures(self) -> list[str]:
        """One line per violated property (empty when the step is exact)."""
        out = []
        if self.pixels_outside:
            out.append(f"images_imt: {self.pixels_outside} pixels lie outside [0, 1] (by up to {self.max_outside:.3g}): "
                       f"the step is not clamped")
        if self.pixels_wrong:
            out.append(f"images_imt: the IMT step |x_t - x| differs from m x eps on {self.pixels_wrong} of "
                       f"{self.pixels_checked} checked pixels in {self.examples_wrong_size} examples (by up to "
                       f"{self.max_step_err:.3g} > {STEP_TOL:g})")
        if self.examples_other_band:
            out.append(f"images_imt: {self.examples_other_band} examples took the other band's step although the "
                       f"reference p_natural is not within rounding of a band edge (band decision differs)")
        return out

    def summary(self) -> str:
        """One line for the parity table."""
        return (f"({self.mode}) exact on {self.pixels_checked - self.pixels_wrong}/{self.pixels_checked} checked pixels, "
                f"band decisions {self.examples - self.examples_other_band - self.examples_near_edge}/{self.examples} "
                f"as the reference ({self.examples_in_band} in the band, {self.examples_near_edge} at an edge), "
                f"{self.pixels_outside} pixels outside [0, 1]")


def multipliers(p_natural: np.ndarray, cfg: IMTConfig) -> np.ndarray:
    """The step multiplier m per example (see imt.step_multiplier), in float64."""
    p = np.asarray(p_natural, dtype=np.float64)
    if cfg.mode == "off":
        return np.zeros_like(p)
    if cfg.mode == "plain":
        return np.ones_like(p)
    lo, hi = cfg.band
    return np.where((p > lo) & (p < hi), cfg.factor, 1.0)


def check_step(
    x: np.ndarray,
    x_t: np.ndarray,
    g_ref: np.ndarray,
    p_ref: np.ndarray,
    p_got: np.ndarray,
    cfg: IMTConfig,
    tol: float = STEP_TOL,
) -> StepCheck:
    """Check a graph's transformed images `x_t` of inputs `x` against the IMT step definition.

    Args:
        x, x_t: the graph's input (as float [0,1] NCHW) and its `images_imt`.
        g_ref, p_ref: the reference gradient and p_natural of `x`.
        p_got: the graph's own p_natural of `x` (bounds where its band decision may legitimately differ).
        cfg: the IMT parameters the artifact declares.
    """
    b = len(x)
    xf = np.asarray(x, np.float64).reshape(b, -1)
    tf = np.asarray(x_t, np.float64).reshape(b, -1)
    gf = np.asarray(g_ref, np.float64).reshape(b, -1)
    d = tf - xf
    beyond = np.maximum(-tf, tf - 1.0)
    outside = beyond > tol
    m_ref = multipliers(p_ref, cfg)
    if cfg.mode == "plus":
        m_alt = np.where(m_ref == 1.0, cfg.factor, 1.0)
        pr = np.asarray(p_ref, np.float64)
        edge_gap = np.minimum(np.abs(pr - cfg.band[0]), np.abs(pr - cfg.band[1]))
        near = edge_gap <= np.abs(np.asarray(p_got, np.float64) - pr) + P_ROUND
    else:
        m_alt, near = m_ref, np.zeros(b, bool)
    s = np.sign(d)
    agree = (s == np.sign(gf)) & (s != 0)

    def errors(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(| |x_t - x| - m*eps | on the checked pixels, 0 elsewhere; the checked-pixel mask) for multipliers `m`."""
        step = m[:, None] * cfg.eps
        target = xf + s * step
        checked = agree & (target > tol) & (target < 1.0 - tol)
        if cfg.mode == "off":  # no step at all: every pixel must be unchanged
            checked = np.ones_like(agree)
        return np.where(checked, np.abs(np.abs(d) - step), 0.0), checked

    err_ref, checked = errors(m_ref)
    ok_ref = (err_ref <= tol).all(axis=1)
    err_alt, _ = errors(m_alt)
    ok_alt = (err_alt <= tol).all(axis=1) & (m_alt != m_ref)
    other_band = ~ok_ref & ok_alt
    wrong_size = ~ok_ref & ~ok_alt
    wrong_pixels = (err_ref > tol) & wrong_size[:, None]
    return StepCheck(
        mode=cfg.mode,
        examples=b,
        examples_in_band=int(((m_ref != 1.0) & (m_ref != 0.0)).sum()) if cfg.mode == "plus" else 0,
        pixels_checked=int(checked.sum()),
        pixels_wrong=int(wrong_pixels.sum()),
        examples_wrong_size=int(wrong_size.sum()),
        max_step_err=float(err_ref[wrong_size].max(initial=0.0)),
        examples_other_band=int((other_band & ~near).sum()),
        examples_near_edge=int((other_band & near).sum()),
        pixels_outside=int(outside.sum()),
        max_outside=float(beyond.max(initial=0.0)) if outside.any() else 0.0,
    )
