"""Compatibility shim: custodian protection now lives in :mod:`keysplit.custody`.

``keysplit.custodian.X`` keeps working for every name it exported.
"""

from __future__ import annotations

from .custody import (
    Argon2Params,
    Identity,
    Recipient,
    SealedShareInfo,
    check_custodian_name,
    is_sealed,
    load_share,
    open_share,
    seal_share,
    seal_share_with_passphrase,
    sealed_share_info,
)
from .custody.hpke import Suite

__all__ = [
    "Argon2Params",
    "Identity",
    "Recipient",
    "SealedShareInfo",
    "Suite",
    "check_custodian_name",
    "is_sealed",
    "load_share",
    "open_share",
    "seal_share",
    "seal_share_with_passphrase",
    "sealed_share_info",
]
