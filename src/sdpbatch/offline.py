"""Keep astropy off the network: IERS tables and data come from the installed packages."""

from __future__ import annotations

import functools


@functools.cache
def configure_astropy_offline() -> None:
    """Forbid astropy downloads; call before any astropy time/coordinate work."""
    from astropy.utils import iers
    from astropy.utils.data import conf as data_conf

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    data_conf.allow_internet = False
