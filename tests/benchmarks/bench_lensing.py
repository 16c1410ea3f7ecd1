"""Benchmark: mock lenses per second per core, lensdask against lenstronomy's ImageModel.

Single-threaded: BLAS and OpenMP are pinned to one thread before NumPy loads, and
scipy.fft runs on one worker (its default). Draws ``--batch`` systems with ``draw_lenses``
and the default ``MockLensConfig``, then times, alternately and ``--repeat`` times (median):

- lensdask: ``render_arcs`` on the whole batch (101 x 101 px of 0.2", supersampling 3, the
  Moffat PSF of FWHM 0.7"), with the Gaussian-random-field perturbation and without it
  (``grf_sigma = 0``). Where ``render_arcs`` draws the GRF at the rays, the same images
  with the GRF drawn at the pixel centres (``grf_perturbation((101, 101), spacing=0.2)``,
  interpolated by ``lensed_images``) are timed too;
- lenstronomy: one ``ImageModel`` per lens model, built once (same grid, ``PIXEL`` PSF,
  supersampling 3), making the first ``--systems`` of the same images one by one: lens
  ``SIE + SHEAR + INTERPOL`` (``INTERPOL`` carries the very deflection grids lensdask drew;
  its cached splines are dropped between systems) or ``SIE + SHEAR``; source
  ``SERSIC_ELLIPSE`` x (1 + clumps), absent clumps with ``amp = 0``.

Prints images per CPU-second of this process (other load on the machine does not count;
wall time beside it), the ratio, and the worst ``max |lensdask - lenstronomy| / peak`` over
the compared systems. Before timing, a 64 MiB array is allocated and freed: glibc then
serves both sides' large temporaries from its heap instead of fresh page-faulting mmaps
(lenstronomy runs about 2x faster that way; lensdask barely changes).

    .venv/bin/python tests/benchmarks/bench_lensing.py --batch 64 --systems 16 --repeat 3
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

SIZE, PIXEL, SUPERSAMPLE, FWHM = 101, 0.2, 3, 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="systems per render_arcs call")
    parser.add_argument("--systems", type=int, default=16, help="systems lenstronomy makes")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    warm = np.ones(1 << 23)  # 64 MiB: raises glibc's mmap threshold (module docstring)
    del warm

    import lensdask.lensing.mocks as mocks
    from lensdask.config import MockLensConfig
    from lensdask.lensing.grf import grf_perturbation
    from lensdask.lensing.image import Grid, convolve, lensed_images
    from lensdask.lensing.psf import moffat_psf

    grid = Grid(SIZE, PIXEL, SUPERSAMPLE)
    psf = moffat_psf(FWHM, pixel_scale=PIXEL)
    params = mocks.draw_lenses(
        args.batch, np.random.default_rng(args.seed), config=MockLensConfig()
    )
    flat = {k: v.copy() for k, v in params.items()}
    flat["grf_sigma"][:] = 0.0
    n_lt = min(args.systems, args.batch)

    # The GRF fields render_arcs draws, captured (not timed) to hand the same to INTERPOL.
    drawn: dict[str, np.ndarray] = {}
    original = mocks.grf_perturbation

    def recording(*a, **k):
        psi, ax, ay = original(*a, **k)
        drawn.update(psi=psi, ax=ax, ay=ay)
        return psi, ax, ay

    def render(batch: dict[str, np.ndarray]) -> np.ndarray:
        return mocks.render_arcs(batch, np.random.default_rng(args.seed + 1), grid=grid, psf=psf)[0]

    def render_grf_at_pixels(batch: dict[str, np.ndarray]) -> np.ndarray:
        """render_arcs with the GRF drawn at the pixel centres (what it could do)."""
        lens = {k: batch[k] for k in ("theta_E", "e1", "e2", "center_x", "center_y")}
        lens |= {"gamma1": batch["gamma1"], "gamma2": batch["gamma2"]}
        psi, ax, ay = grf_perturbation(
            (SIZE, SIZE),
            spacing=PIXEL,
            sigma=batch["grf_sigma"],
            slope=batch["grf_slope"],
            rng=np.random.default_rng(args.seed + 1),
        )
        drawn_pixels.update(psi=psi, ax=ax, ay=ay)
        source = mocks.source_components(batch)
        images = lensed_images(lens, source, grid=grid, psf=None, perturbation=(ax, ay))
        _ = images.sum(axis=(1, 2)) / mocks.sersic_flux(source)  # the magnification
        return convolve(images, psf)

    drawn_pixels: dict[str, np.ndarray] = {}
    mocks.grf_perturbation = recording
    try:
        grf_image = render(params)
    finally:
        mocks.grf_perturbation = original
    at_rays = drawn["ax"].shape[-1] == grid.shape[0]
    cases: dict[str, tuple[Callable, dict, dict | None, np.ndarray]] = {
        f"GRF at the {'rays' if at_rays else 'pixels'}, render_arcs": (
            render,
            params,
            {**drawn, "axis": grid.axis() if at_rays else grid.pixel_axis()},
            grf_image,
        ),
    }
    if at_rays:
        pixel_image = render_grf_at_pixels(params)
        cases["GRF at the pixels, proposed"] = (
            render_grf_at_pixels,
            params,
            {**drawn_pixels, "axis": grid.pixel_axis()},
            pixel_image,
        )
    cases["no GRF, render_arcs"] = (render, flat, None, render(flat))

    lenstronomy = Lenstronomy(params, psf, n_lt)
    references = {case: lenstronomy.images(grf) for case, (_, _, grf, _) in cases.items()}

    def timed(fn: Callable, *a) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*a)
        return time.process_time() - cpu, time.perf_counter() - wall

    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeat):
        for case, (fn, batch, grf, _) in cases.items():
            runs.setdefault((case, "lensdask"), []).append(timed(fn, batch))
            runs.setdefault((case, "lenstronomy"), []).append(timed(lenstronomy.images, grf))

    print(
        f"{args.batch} mock lenses (lenstronomy: the first {n_lt}), {SIZE}x{SIZE} px of "
        f'{PIXEL}", supersampling {SUPERSAMPLE}, Moffat PSF {psf.shape[0]}x{psf.shape[1]} px, '
        f"{lenstronomy.n_components} Sersic components; one thread, median of {args.repeat}"
    )
    print(
        f"\n{'case':<34}{'tool':<13}{'images/s/core':>14}{'ms/image':>10}{'wall ms':>9}"
        f"{'ratio':>8}{'max|diff|/peak':>16}"
    )
    for case, (_, _, _, image) in cases.items():
        cpu = {}
        for tool, count in (("lenstronomy", n_lt), ("lensdask", args.batch)):
            results = runs[(case, tool)]
            cpu[tool] = statistics.median(c for c, _ in results) / count
            wall = statistics.median(w for _, w in results) / count
        ref = references[case]
        error = np.abs(image[:n_lt] - ref).max(axis=(1, 2)) / ref.max(axis=(1, 2))
        for tool, count in (("lensdask", args.batch), ("lenstronomy", n_lt)):
            wall = statistics.median(w for _, w in runs[(case, tool)]) / count
            ratio = f"{cpu['lenstronomy'] / cpu['lensdask']:.1f}x" if tool == "lensdask" else ""
            diff = f"{error.max():.1e}" if tool == "lensdask" else ""
            print(
                f"{case if tool == 'lensdask' else '':<34}{tool:<13}{1 / cpu[tool]:>14,.1f}"
                f"{cpu[tool] * 1e3:>10.2f}{wall * 1e3:>9.2f}{ratio:>8}{diff:>16}"
            )


class Lenstronomy:
    """lenstronomy's ImageModel on the same grid, PSF and numerics, one system at a time."""

    def __init__(self, params: dict[str, np.ndarray], psf: np.ndarray, count: int):
        from lenstronomy.Data.imaging_data import ImageData
        from lenstronomy.Data.psf import PSF
        from lenstronomy.ImSim.image_model import ImageModel
        from lenstronomy.LensModel.lens_model import LensModel
        from lenstronomy.LightModel.light_model import LightModel

        from lensdask.lensing.mocks import source_components

        self.params, self.count = params, count
        self.source = source_components(params)
        self.n_components = self.source["amp"].shape[1]
        c = (SIZE - 1) / 2
        data = ImageData(
            image_data=np.zeros((SIZE, SIZE)),
            transform_pix2angle=np.eye(2) * PIXEL,
            ra_at_xy_0=-c * PIXEL,
            dec_at_xy_0=-c * PIXEL,
        )
        self.models = {
            grf: ImageModel(
                data,
                PSF(psf_type="PIXEL", kernel_point_source=psf),
                lens_model_class=LensModel(["SIE", "SHEAR"] + (["INTERPOL"] if grf else [])),
                source_model_class=LightModel(["SERSIC_ELLIPSE"] * self.n_components),
                kwargs_numerics={"supersampling_factor": SUPERSAMPLE},
            )
            for grf in (False, True)
        }
        self.interpol = self.models[True].LensModel.lens_model.func_list[2]

    def images(self, grf: dict | None) -> np.ndarray:
        p, out = self.params, []
        for i in range(self.count):
            lens = [
                {k: float(p[k][i]) for k in ("theta_E", "e1", "e2", "center_x", "center_y")},
                {"gamma1": float(p["gamma1"][i]), "gamma2": float(p["gamma2"][i])},
            ]
            if grf is not None:
                lens.append(
                    {
                        "grid_interp_x": grf["axis"],
                        "grid_interp_y": grf["axis"],
                        "f_": grf["psi"][i],
                        "f_x": grf["ax"][i],
                        "f_y": grf["ay"][i],
                    }
                )
                # INTERPOL caches its splines on first use: each system needs its own.
                for name in ("_f_interp", "_f_x_interp", "_f_y_interp"):
                    self.interpol.__dict__.pop(name, None)
            light = [
                {key: float(self.source[key][i, c]) for key in self.source}
                for c in range(self.n_components)
            ]
            model = self.models[grf is not None]
            out.append(model.image(kwargs_lens=lens, kwargs_source=light))
        return np.stack(out)


if __name__ == "__main__":
    main()
