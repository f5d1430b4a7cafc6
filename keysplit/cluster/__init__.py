"""The threshold key cluster's mathematics: DKG, refresh, share recovery and the DPRF.

Pure functions over ristretto255 (:mod:`keysplit.hazmat.ristretto`), no I/O: the node
service, the wire and the client build on them. :mod:`.dkg` makes and maintains the
T-of-N shared cluster key; :mod:`.dprf` turns T nodes' answers for a subject into that
subject's KEK, with a DLEQ proof per answer that names a node answering wrongly.
Formats and the security argument: ``docs/format/cluster.md``.
"""

from __future__ import annotations

from . import dkg, dprf
from .dkg import Dealing, NodeShare

__all__ = ["Dealing", "NodeShare", "dkg", "dprf"]
