"""Physical constants and the SKA1-Low site and station facts used by the simulation.

Site: the SKA1-Low array centre (science reference); casacore measures knows the observatory as
``SKA-LOW`` (WGS84 116.7644°, -26.8248°, 365 m); we use the reference's 300 m height.
"""

from __future__ import annotations

import math

C = 299_792_458.0
"""Speed of light (m/s)."""

K_B = 1.380_649e-23
"""Boltzmann constant (J/K)."""

JY = 1e-26
"""One jansky (W m^-2 Hz^-1)."""

SITE_LON = math.radians(116.7644482)
"""SKA1-Low site longitude (rad, WGS84, east positive)."""

SITE_LAT = math.radians(-26.82472208)
"""SKA1-Low site latitude (rad, WGS84)."""

SITE_HEIGHT = 300.0
"""SKA1-Low site height above the WGS84 ellipsoid (m)."""

STATION_DIAMETER = 38.0
"""SKA1-Low station diameter (m)."""

EFFICIENCY = 0.78
"""Station aperture efficiency used for radiometer noise."""

TELESCOPE_NAME = "SKA1-Low"
"""Name written to the MeasurementSet OBSERVATION table."""

SIDEREAL_RATE = 2.0 * math.pi / 86_164.090_530_832_88
"""Earth rotation rate (rad per second of UT1), for hour angle to time."""
