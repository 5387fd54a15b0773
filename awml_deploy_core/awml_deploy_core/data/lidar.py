"""A spinning multi-beam lidar, ray-cast with numpy (no ROS, no GPU).

Frame: the lidar frame. The sensor sits at the origin, +x forward, +z up; the ground lies at about
``z = -sensor_height``. Ray ``r`` is fired by beam ``r % beams`` in azimuth column ``r // beams``; columns
sweep counter-clockwise from azimuth -pi (straight behind) so that column ``j`` fires at
``j / num_columns * sweep_period`` seconds after the sweep starts. The scene is frozen during one sweep
(no rolling-shutter smear).

Geometry is a set of oriented boxes ("primitives", yaw only) plus a height-field ground. Only the first
hit along each ray returns, so occlusion is real. The boxes are intersected with the slab method in
each box's own frame; because every ray starts at the sensor, the ray origin in a box frame is one
constant per box. To stay fast each box is tested only against the rays whose azimuth column and beam
elevation can reach it (a conservative angular bound), in chunks of bounded size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

#: Upper bound on (ray, box) pairs held in memory at once; 400k pairs use roughly 60 MB of temporaries.
PAIR_CHUNK = 400_000


@dataclass(frozen=True)
class LidarSpec:
    """A 360-degree spinning lidar. Defaults give ~120k points per frame in a street scene."""

    beams: int = 64
    fov_down_deg: float = -25.0  # elevation of the lowest beam
    fov_up_deg: float = 3.0  # elevation of the highest beam
    azimuth_resolution_deg: float = 0.16
    max_range: float = 100.0
    min_range: float = 1.0
    range_noise_std: float = 0.02  # metres, Gaussian, along the ray
    dropout: float = 0.03  # probability that a return is lost
    sensor_height: float = 1.8  # sensor above the ground under it, metres
    sweep_period: float = 0.1  # seconds per revolution; frames come at 1 / sweep_period Hz

    def __post_init__(self) -> None:
        problems = []
        if self.beams < 1 or self.beams > 65535:
            problems.append(f"beams={self.beams} (1..65535)")
        if not self.fov_up_deg > self.fov_down_deg or not -90 < self.fov_down_deg or not self.fov_up_deg < 90:
            problems.append(f"fov {self.fov_down_deg}..{self.fov_up_deg} deg (need -90 < down < up < 90)")
        if not 0 < self.azimuth_resolution_deg <= 10:
            problems.append(f"azimuth_resolution_deg={self.azimuth_resolution_deg} (0 < r <= 10)")
        if not 0 <= self.min_range < self.max_range:
            problems.append(f"range {self.min_range}..{self.max_range} (0 <= min < max)")
        if self.range_noise_std < 0 or not 0 <= self.dropout < 1:
            problems.append(f"range_noise_std={self.range_noise_std}, dropout={self.dropout}")
        if self.sensor_height <= 0 or self.sweep_period <= 0:
            problems.append(f"sensor_height={self.sensor_height}, sweep_period={self.sweep_period} (> 0)")
        if problems:
            raise ConfigError("LidarSpec: bad " + "; ".join(problems))

    @property
    def num_columns(self) -> int:
        return int(round(360.0 / self.azimuth_resolution_deg))

    @property
    def num_rays(self) -> int:
        return self.num_columns * self.beams

    def elevations(self) -> np.ndarray:
        """Beam elevations in radians, ascending with the beam index (ring)."""
        if self.beams == 1:
            return np.array([math.radians(self.fov_down_deg)])
        return np.radians(np.linspace(self.fov_down_deg, self.fov_up_deg, self.beams))

    def azimuths(self) -> np.ndarray:
        """Column azimuths in radians, in firing order, in (-pi, pi)."""
        n = self.num_columns
        return -math.pi + (np.arange(n) + 0.5) * (2 * math.pi / n)

    def ray_directions(self) -> np.ndarray:
        """(num_rays, 3) float64 unit vectors, ray index = column * beams + beam."""
        el = self.elevations()
        az = self.azimuths()
        ce, se = np.cos(el), np.sin(el)
        d = np.empty((len(az), len(el), 3))
        d[..., 0] = np.cos(az)[:, None] * ce[None, :]
        d[..., 1] = np.sin(az)[:, None] * ce[None, :]
        d[..., 2] = se[None, :]
        return d.reshape(-1, 3)


@dataclass(frozen=True)
class Ground:
    """Height field ``z(x, y) = -height + slope_x*x + slope_y*y + sum_k a_k (sin(k.p + phi_k) - sin(phi_k))``.

    The undulation is zero under the sensor, so the ground there is exactly ``-height``.
    """

    height: float = 1.8
    slope_x: float = 0.0
    slope_y: float = 0.0
    amplitudes: tuple[float, ...] = ()
    wavevectors: tuple[tuple[float, float], ...] = ()
    phases: tuple[float, ...] = ()

    def z(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        z = -self.height + self.slope_x * x + self.slope_y * y
        for a, (kx, ky), ph in zip(self.amplitudes, self.wavevectors, self.phases):
            z = z + a * (np.sin(kx * x + ky * y + ph) - math.sin(ph))
        return z

    def _undulation_and_grad(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        u = np.zeros_like(x)
        gx = np.zeros_like(x)
        gy = np.zeros_like(x)
        for a, (kx, ky), ph in zip(self.amplitudes, self.wavevectors, self.phases):
            arg = kx * x + ky * y + ph
            u += a * (np.sin(arg) - math.sin(ph))
            c = a * np.cos(arg)
            gx += c * kx
            gy += c * ky
        return u, gx, gy

    def intersect(self, dirs: np.ndarray, max_range: float) -> tuple[np.ndarray, np.ndarray]:
        """First ground hit of rays from the origin: (t, cos_incidence); t = inf where none.

        Solves ``t*dz = z(t*dx, t*dy)`` by Newton's method from the hit on the tilted plane; rays that
        do not converge within 1 mm (grazing rays far away) count as misses.
        """
        dx, dy, dz = dirs[:, 0], dirs[:, 1], dirs[:, 2]
        denom = dz - self.slope_x * dx - self.slope_y * dy  # d/dt of (ray z - plane z)
        t = np.full(len(dirs), np.inf)
        cand = denom < -1e-9
        idx = np.nonzero(cand)[0]
        tc = self.height / -denom[idx]
        keep = tc < max_range * 1.5
        idx, tc = idx[keep], tc[keep]
        ddx, ddy, den = dx[idx], dy[idx], denom[idx]
        if self.amplitudes:
            for _ in range(6):
                u, gx, gy = self._undulation_and_grad(tc * ddx, tc * ddy)
                f = tc * den + self.height - u
                fp = den - (gx * ddx + gy * ddy)
                fp = np.where(np.abs(fp) < 1e-9, -1e-9, fp)
                tc = tc - f / fp
            u, gx, gy = self._undulation_and_grad(tc * ddx, tc * ddy)
            ok = (np.abs(tc * den + self.height - u) < 1e-3) & (tc > 0)
        else:
            gx = gy = np.zeros_like(tc)
            ok = tc > 0
        ok &= tc <= max_range
        t[idx[ok]] = tc[ok]
        # Surface normal ~ (-dz/dx, -dz/dy, 1).
        nx = -(self.slope_x + gx)
        ny = -(self.slope_y + gy)
        cos_inc = np.zeros(len(dirs))
        dots = np.abs(nx * ddx + ny * ddy + dirs[idx, 2]) / np.sqrt(nx * nx + ny * ny + 1.0)
        cos_inc[idx[ok]] = dots[ok]
        return t, cos_inc


@dataclass
class Primitives:
    """Oriented boxes to ray-cast: centres (K,3) (z = box centre), half sizes (K,3), yaw (K,),
    reflectivity (K,) in 0..255, owner (K,) int (object index, or -1 for static clutter)."""

    centers: np.ndarray
    halves: np.ndarray
    yaws: np.ndarray
    reflectivity: np.ndarray
    owner: np.ndarray

    @staticmethod
    def empty() -> "Primitives":
        return Primitives(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.yaws)

    @staticmethod
    def concatenate(parts: list["Primitives"]) -> "Primitives":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Primitives.empty()
        return Primitives(
            np.concatenate([p.centers for p in parts]),
            np.concatenate([p.halves for p in parts]),
            np.concatenate([p.yaws for p in parts]),
            np.concatenate([p.reflectivity for p in parts]),
            np.concatenate([p.owner for p in parts]),
        )


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def _candidate_rays(spec: LidarSpec, prims: Primitives) -> tuple[np.ndarray, ...]:
    """Per box: first column, number of columns, first beam, number of beams it can be hit by."""
    ncols = spec.num_columns
    res = 2 * math.pi / ncols
    cx, cy, cz = prims.centers[:, 0], prims.centers[:, 1], prims.centers[:, 2]
    hx, hy, hz = prims.halves[:, 0], prims.halves[:, 1], prims.halves[:, 2]
    c, s = np.cos(prims.yaws), np.sin(prims.yaws)
    # Sensor position in each box frame, and its BEV distance to the footprint.
    ox = -(c * cx + s * cy)
    oy = -(-s * cx + c * cy)
    dmin = np.hypot(np.maximum(np.abs(ox) - hx, 0.0), np.maximum(np.abs(oy) - hy, 0.0))
    inside = dmin <= 1e-9
    sx = np.array([1, 1, -1, -1])
    sy = np.array([1, -1, 1, -1])
    kx = cx[:, None] + c[:, None] * (sx * hx[:, None]) - s[:, None] * (sy * hy[:, None])
    ky = cy[:, None] + s[:, None] * (sx * hx[:, None]) + c[:, None] * (sy * hy[:, None])
    dmax = np.sqrt(kx * kx + ky * ky).max(axis=1)
    az_c = np.arctan2(cy, cx)
    rel = _wrap(np.arctan2(ky, kx) - az_c[:, None])
    lo = az_c + rel.min(axis=1)
    hi = az_c + rel.max(axis=1)
    j_lo = np.ceil((lo + math.pi) / res - 0.5).astype(np.int64)
    j_hi = np.floor((hi + math.pi) / res - 0.5).astype(np.int64)
    ncol = np.clip(j_hi - j_lo + 1, 0, ncols)
    j_lo = np.where(inside, 0, j_lo % ncols)
    ncol = np.where(inside, ncols, ncol)
    # Elevation bound from the box's z extent over its distance interval.
    zlo, zhi = cz - hz, cz + hz
    e_lo = np.minimum(np.arctan2(zlo, dmin), np.arctan2(zlo, dmax))
    e_hi = np.maximum(np.arctan2(zhi, dmin), np.arctan2(zhi, dmax))
    el = spec.elevations()
    b_lo = np.searchsorted(el, e_lo - 1e-12, side="left")
    b_hi = np.searchsorted(el, e_hi + 1e-12, side="right")
    nb = np.maximum(b_hi - b_lo, 0)
    reachable = dmin < spec.max_range
    ncol = np.where(reachable, ncol, 0)
    return j_lo, ncol, b_lo, nb, ox, oy, c, s


def cast_primitives(
    spec: LidarSpec, dirs: np.ndarray, prims: Primitives, chunk: int = PAIR_CHUNK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First hit of every ray against the boxes.

    Returns ``t`` (R,) range to the hit (inf where none), ``prim`` (R,) index of the box hit (-1 where
    none) and ``cos_inc`` (R,) |cos| of the incidence angle on the face hit.
    """
    nrays = len(dirs)
    t_best = np.full(nrays, np.inf)
    prim_best = np.full(nrays, -1, np.int64)
    cos_best = np.zeros(nrays)
    if len(prims) == 0:
        return t_best, prim_best, cos_best
    j_lo, ncol, b_lo, nb, ox, oy, cyaw, syaw = _candidate_rays(spec, prims)
    counts = ncol * nb
    beams, ncols = spec.beams, spec.num_columns
    hits_ray, hits_t, hits_prim, hits_cos = [], [], [], []
    # Chunk boundaries: consecutive boxes whose pair counts sum to about `chunk`.
    order = np.nonzero(counts)[0]
    start = 0
    while start < len(order):
        total = 0
        stop = start
        while stop < len(order) and (stop == start or total + counts[order[stop]] <= chunk):
            total += counts[order[stop]]
            stop += 1
        ids = order[start:stop]
        start = stop
        n = counts[ids]
        pid = np.repeat(ids, n)
        offs = np.cumsum(n) - n
        k = np.arange(int(n.sum())) - np.repeat(offs, n)
        nbp = nb[pid]
        col = (j_lo[pid] + k // nbp) % ncols
        ray = col * beams + b_lo[pid] + k % nbp
        d = dirs[ray]
        cp, sp = cyaw[pid], syaw[pid]
        dl = (cp * d[:, 0] + sp * d[:, 1], -sp * d[:, 0] + cp * d[:, 1], d[:, 2])
        ol = (ox[pid], oy[pid], -prims.centers[pid, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            near, far = [], []
            for a in range(3):
                inv = 1.0 / dl[a]
                h = prims.halves[pid, a]
                t1 = (-h - ol[a]) * inv
                t2 = (h - ol[a]) * inv
                near.append(np.minimum(t1, t2))
                far.append(np.maximum(t1, t2))
            tn = np.maximum(np.maximum(near[0], near[1]), near[2])
            tf = np.minimum(np.minimum(far[0], far[1]), far[2])
            hit = (tn <= tf) & (tn > 0) & (tn <= spec.max_range)
        if not hit.any():
            continue
        # The face entered is the slab whose entry is last; |cos incidence| is that direction component.
        axis = np.where(near[0] >= near[1], 0, 1)
        axis = np.where(near[2] > np.maximum(near[0], near[1]), 2, axis)
        cos_inc = np.abs(np.choose(axis, dl))
        r, tt = ray[hit], tn[hit]
        np.minimum.at(t_best, r, tt)
        hits_ray.append(r)
        hits_t.append(tt)
        hits_prim.append(pid[hit])
        hits_cos.append(cos_inc[hit])
    if hits_ray:
        r = np.concatenate(hits_ray)
        tt = np.concatenate(hits_t)
        win = tt == t_best[r]
        prim_best[r[win]] = np.concatenate(hits_prim)[win]
        cos_best[r[win]] = np.concatenate(hits_cos)[win]
    return t_best, prim_best, cos_best
