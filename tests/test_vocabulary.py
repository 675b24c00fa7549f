"""Every name has one home: no module of the package spells a name of ``sdpbatch.vocabulary``
by hand (a status, a key prefix, ``proc-``, a product file name, a data-root folder, the
loopback address, etcd's port), and the one buffer-name rule is the one every path applies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sdpbatch import vocabulary as V
from sdpbatch.control.buffers import BufferError, check_buffer_name
from sdpbatch.control.configdb import Config
from sdpbatch.control.configdb.backend_memory import MemoryStore
from sdpbatch.control.configdb.ids import InvalidId
from sdpbatch.parameters import ParameterError, Parameters

PACKAGE = Path(V.__file__).resolve().parent
HOME = Path(V.__file__).resolve()

CONTAINED = {
    V.LOOPBACK: "LOOPBACK",
    "localhost": "LOOPBACK_NAMES",
    f":{V.ETCD_PORT}": "ETCD_PORT",
    V.PROCESS_DEPLOYMENT: "block_deployment_prefix and the deployment ids",
    V.DEFAULT_PRODUCT_PREFIX: "DEFAULT_PRODUCT_PREFIX",
    V.QA_FILE: "product_files / QA_FILE",
    **{end: "product_files" for end in V.PRODUCT_SUFFIXES.values()},
    **{
        name: name_of
        for name, name_of in (
            (V.TRUTH_SKYMODEL_FILE, "TRUTH_SKYMODEL_FILE"),
            (V.CATALOGUE_FILE, "CATALOGUE_FILE"),
            (V.TRUTH_GAINS_FILE, "TRUTH_GAINS_FILE"),
            (V.TRUTH_INTRINSIC_FILE, "TRUTH_INTRINSIC_FILE"),
            (V.SIMULATION_FILE, "SIMULATION_FILE"),
        )
    },  # fmt: skip
    **{prefix: "the key functions" for prefix in V.TOP_LEVEL},
    f"{V.LOGS_DIR}/": "LOGS_DIR",
}
"""Text that spells a name wherever it appears in a string (an f-string's pieces included)."""
STATUSES = {str(s) for enum in (V.BlockStatus, V.SbiStatus, V.DeploymentStatus) for s in enum} | {
    V.NEW,
    V.PENDING,
    V.REMOVING,
}
EQUAL = {word: "BlockStatus, SbiStatus, DeploymentStatus, NEW, PENDING, REMOVING" for word in
         STATUSES} | {V.LOGS_DIR: "LOGS_DIR (or Layout.logs)", V.DASK_DIR: "DASK_DIR"}  # fmt: skip
"""Strings that are a name when they are the whole string (not a JSON field or a command)."""
FOREIGN = {
    "control/engines/slurm_commands.py": {"PENDING", "RUNNING"},
    "io/provenance.py": {"dask"},
    "execution/runner.py": {"dask"},
}
"""Words of another system spelled like ours: SLURM's job states, the Dask package."""
NUMBERS = {V.ETCD_PORT: "ETCD_PORT"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (a statement of a string alone)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _labels(tree: ast.AST) -> set[int]:
    """ids of the strings that are labels, not names: dict keys, subscripts, a sub-command."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            found |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, ast.Subscript):
            found.add(id(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and node.args
        ):
            found.add(id(node.args[0]))
    return found


def spelled(source: str, foreign: frozenset[str] = frozenset()) -> list[str]:
    """The names ``source`` spells by hand: ``line: 'text' (use HOME)``."""
    tree = ast.parse(source)
    skip, labels = _docstrings(tree), _labels(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in skip:
            continue
        value = node.value
        if isinstance(value, str):
            homes = [home for text, home in CONTAINED.items() if text in value]
            if value in EQUAL and value not in foreign and id(node) not in labels:
                homes.append(EQUAL[value])
        elif isinstance(value, int) and not isinstance(value, bool):
            homes = [NUMBERS[value]] if value in NUMBERS else []
        else:
            continue
        found += [f"{node.lineno}: {value!r} (use vocabulary.{home})" for home in homes]
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        if path != HOME:
            rel = path.relative_to(PACKAGE).as_posix()
            yield pytest.param(path, rel, id=rel)


@pytest.mark.parametrize(("path", "rel"), list(_modules()))
def test_no_module_spells_a_name_by_hand(path: Path, rel: str):
    found = spelled(path.read_text(), frozenset(FOREIGN.get(rel, ())))
    assert not found, f"{rel} spells names of sdpbatch.vocabulary by hand:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'HOST = "127.0.0.1"',
        'url = f"http://127.0.0.1:{port}"',
        'allowed = ["localhost"]',
        "port = 2379",
        'ours = [d for d in ids if d.startswith(f"proc-{pb_id}-")]',
        'key = "/pb/" + pb_id',
        'txn.get("/engine")',
        'name = f"{prefix}_restored.fits"',
        'gains = out / "ska_pipeline_ical_gains.h5"',
        'qa = out / "qa.json"',
        'logs = root / "logs"',
        'path = f"logs/{name}"',
        'if state.get("status") == "RUNNING": pass',
        'record = {"status": "ACTIVE"}',
        'end_sbi(txn, sbi_id, "CANCELLED")',
        'work = root / "dask" / deploy_id',
    ],
)
def test_the_check_finds_a_hand_spelled_name(source: str):
    assert spelled(source), source


@pytest.mark.parametrize(
    "source",
    [
        '"""Logs go to logs/ on 127.0.0.1:2379 under /pb/, as qa.json says."""',
        'view = {"logs": block_logs, "status": status}',
        'p = sub.add_parser("logs", help="the workflow log")',
        'log = snapshot["logs"]',
        'LIVE = frozenset({"RUNNING"})',
    ],
)
def test_the_check_leaves_docstrings_and_labels(source: str):
    foreign = frozenset({"RUNNING"}) if "LIVE" in source else frozenset()
    assert not spelled(source, foreign), source


# --- the one buffer-name rule ---------------------------------------------------------------

GOOD_NAMES = ["buff-pb-1-vis", "a", "A-b-c-1", "x" * 96, "logs2"]
BAD_NAMES = [
    "", ".", "..", "../x", "a/b", "-rf", "-", ".hidden", "a..b", "a.b", "a_b", "a b", "x" * 97,
    "logs", "LOGS", "dask", "etcd", "tango", "state", "buff\x00", "buff\n",
]  # fmt: skip


def _refusals(name: str) -> dict[str, bool]:
    """Whether each path that takes a buffer name refuses ``name``."""
    refused = {}
    try:
        Parameters(buffer_vis=name)
        refused["parameters"] = False
    except ParameterError:
        refused["parameters"] = True
    try:
        check_buffer_name(name)
        refused["control.buffers"] = False
    except BufferError:
        refused["control.buffers"] = True
    with Config("memory", store=MemoryStore()) as config:
        try:
            for txn in config.txn():
                txn.get_buffer(name)
            refused["configdb"] = False
        except InvalidId:
            refused["configdb"] = True
    refused["vocabulary"] = not V.is_buffer_name(name)
    return refused


@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES)
def test_every_path_refuses_the_same_buffer_names(name: str):
    refused = _refusals(name)
    want = name in BAD_NAMES
    assert refused == dict.fromkeys(refused, want), f"{name!r}: {refused}"
