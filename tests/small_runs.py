"""Parameters of a small batch imaging run for the end-to-end tests of the control plane:
3 channels x 3 times of the stations within 300 m, a 256-pixel image, 2 major cycles
(a few seconds of work on 2 Dask workers)."""

SMALL_BATCH = {
    "n_workers": 2,
    "nfreqwin": 3,
    "ntimes": 3,
    "rmax": 300.0,
    "npixel": 256,
    "cellsize": 0.0015,
    "nmajor": 2,
    "niter": 200,
    "scales": [0, 3],
    "flux_limit": 5.0,
}
