"""ICAL: self-calibration and imaging of MeasurementSets, in this process or on Dask.

The package, one concern a module:

- :mod:`.driver`: ``run_ical``, the story of a run;
- :mod:`.cycles`, :mod:`.finish`: its steps (read, first cycle, major cycles, final images);
- :mod:`.state`: the explicit state of a run (fixed context, imaging setup, cycle state);
- :mod:`.settings`: execution knobs, imaging/clean settings, threads, calibration schedule;
- :mod:`.data`, :mod:`.group`, :mod:`.scratch`: windows, blocks, groups of chunks and where
  their arrays are kept (memory or scratch files);
- :mod:`.tasks`: the passes over a group that run on a worker; :mod:`.combine`: the small
  tasks that combine them (sums, clean, final images);
- :mod:`.results`: :class:`IcalResult`, gain solutions and per-cycle records.
"""

from sdpbatch.execution.ical.driver import run_ical
from sdpbatch.execution.ical.results import CycleRecord, FinalRecord, GainSolution, IcalResult
from sdpbatch.execution.ical.settings import IcalSettings

__all__ = ["CycleRecord", "FinalRecord", "GainSolution", "IcalResult", "IcalSettings", "run_ical"]
