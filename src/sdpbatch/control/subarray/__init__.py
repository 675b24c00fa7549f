"""The SDP subarray Tango device: obsState machine, configuration schema, device server.

``state_machine`` and ``schema`` are pure (no Tango, no database) and unit tested on their own;
``device`` is the thin pytango layer: validate, write the intent to the config DB in one
transaction, then update obsState.
"""
