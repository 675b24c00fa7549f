"""The operator's web page: a read-only server over one data root and its configuration database.

``sdpbatch web --data-dir DIR`` (and ``sdpbatch up``, as one more component) serves pages of the
system, the scheduling block instances and processing blocks (live, through server-sent events),
one block (its workflow log streaming, deployments, buffers and files) and one image product
(restored and residual images with RA/Dec axes and the beam, gains per station, per-cycle QA),
and a JSON API under ``/api/`` for everything the pages show.  It only reads: every route
answers GET (and HEAD) alone, and only files of the buffers and logs under the data root are
served (:mod:`.files`).
"""
