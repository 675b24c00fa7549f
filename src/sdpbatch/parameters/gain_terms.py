"""The gain terms ICAL can solve: :data:`TERMS`, one :class:`GainTerm` a term.

The one table of the terms: their names, what each solves (phase only or amplitude and phase,
per channel or not), when self-calibration starts solving it and over which intervals.  The
schema's calibration fields (``calibration_context`` and each term's ``first_selfcal_<term>``,
``timeslice_<term>``), the solver (:mod:`sdpbatch.science.solve`) and ICAL's calibration
schedule (:class:`sdpbatch.execution.ical.settings.CalibrationSchedule`) are derived from it;
a new term is one entry here (and its fields in the :class:`~.validation.Parameters` model,
which a test checks against the schema).  It lives in the shared base because the schema does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GainTerm:
    """One gain term.

    name : one letter, as ``calibration_context`` spells it.
    meaning : a few words for the help texts.
    phase_only : solves phases only (|g| = 1).
    per_channel : one solution per channel (else one for all channels).
    first_cycle : default of ``first_selfcal_<name>``, the first major cycle that solves it.
    interval : its solution interval (s): 0 per integration, None the whole observation;
        the default of ``timeslice_<name>`` when ``interval_is_parameter``.
    interval_is_parameter : the interval is the parameter ``timeslice_<name>``.
    per_direction : one solution per calibration direction (parameter ``ndirections``),
        solved jointly against each direction's model (DDECal's directions); applied in
        imaging by subtracting each direction's corrupted model.
    """

    name: str
    meaning: str
    phase_only: bool
    per_channel: bool
    first_cycle: int
    interval: float | None
    interval_is_parameter: bool = False
    per_direction: bool = False

    @property
    def first_parameter(self) -> str:
        """The parameter of the first major cycle that solves the term."""
        return f"first_selfcal_{self.name}"

    @property
    def interval_parameter(self) -> str | None:
        """The parameter of the term's solution interval (None: the interval is fixed)."""
        return f"timeslice_{self.name}" if self.interval_is_parameter else None


TERMS: dict[str, GainTerm] = {
    t.name: t
    for t in (
        GainTerm("T", "phase per integration", phase_only=True, per_channel=False,
                 first_cycle=0, interval=0.0),
        GainTerm("G", "amp+phase", phase_only=False, per_channel=False, first_cycle=3,
                 interval=None, interval_is_parameter=True),
        GainTerm("B", "bandpass", phase_only=False, per_channel=True, first_cycle=4,
                 interval=None),
        GainTerm("D", "phase per direction and integration", phase_only=True,
                 per_channel=False, first_cycle=0, interval=0.0, per_direction=True),
    )
}  # fmt: skip
"""The gain terms in the order they are named in ``calibration_context`` (and applied)."""
