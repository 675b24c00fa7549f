"""Identifier rules of the configuration database (the prototype's regular expressions).

Every id becomes part of a database key, and some become directory or process names, so
they are checked before anything is written: letters, digits and '-' only.  Buffer names
follow the one rule of :func:`sdpbatch.vocabulary.is_buffer_name` (they become directories).
"""

from __future__ import annotations

import re

from sdpbatch.control.configdb.backend import ConfigError
from sdpbatch.vocabulary import BUFFER_NAME_ALLOWED, is_buffer_name

PB_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
SBI_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
DEPLOYMENT_ID = re.compile(r"^[A-Za-z0-9\-]{1,96}$")
SUBARRAY_ID = re.compile(r"^[0-9]{2}$")
GENERATOR = re.compile(r"^[A-Za-z0-9]{1,32}$")
COMPONENT = re.compile(r"^[a-z][a-z0-9\-]{0,31}$")

_RULES = {
    "processing block": (PB_ID, "letters, digits and '-', 1 to 64 characters"),
    "scheduling block instance": (SBI_ID, "letters, digits and '-', 1 to 64 characters"),
    "deployment": (DEPLOYMENT_ID, "letters, digits and '-', 1 to 96 characters"),
    "subarray": (SUBARRAY_ID, "two digits, e.g. '01'"),
    "generator": (GENERATOR, "letters and digits, 1 to 32 characters"),
    "component": (COMPONENT, "lower-case letters, digits and '-', 1 to 32 characters"),
}


class InvalidId(ConfigError, ValueError):
    """An identifier does not follow the rules of its kind."""


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid id of ``kind``, else raise :class:`InvalidId`."""
    pattern, allowed = _RULES[kind]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidId(f"invalid {kind} id {value!r}: allowed are {allowed}")
    return value


def check_pb_id(value: object) -> str:
    return check_id("processing block", value)


def check_sbi_id(value: object) -> str:
    return check_id("scheduling block instance", value)


def check_deployment_id(value: object) -> str:
    return check_id("deployment", value)


def check_subarray_id(value: object) -> str:
    return check_id("subarray", value)


def check_buffer_id(value: object) -> str:
    """``value`` if it may name a buffer (:func:`sdpbatch.vocabulary.is_buffer_name`), else
    :class:`InvalidId`."""
    if not is_buffer_name(value):
        raise InvalidId(f"invalid buffer name {value!r}: allowed are {BUFFER_NAME_ALLOWED}")
    return value
