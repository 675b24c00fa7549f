"""sdpbatch: the SKA SDP batch imaging workflow, on one machine or a Dask cluster.

Layers, each using only those listed before it:
``science`` (numpy in, numpy out) -> ``io`` (MeasurementSets, FITS, gain tables) ->
``execution`` (Dask graphs and clusters) -> ``control`` (config DB, controller, deployer,
buffers, Tango device) -> ``workflows`` -> ``cli``.  ``parameters`` is shared by all.
"""

__version__ = "0.1.0"

from sdpbatch.offline import configure_casacore_measures  # noqa: E402

configure_casacore_measures()  # current leap seconds for casacore, before it reads any table
