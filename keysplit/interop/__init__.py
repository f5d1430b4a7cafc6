"""Foreign share formats: read them, check what can be checked, convert to and from keysplit.

One module per format, and one for the conversions between them:

* :mod:`.vault` -- HashiCorp Vault / OpenBao unseal and recovery keys (docs/format/vault.md);
* :mod:`.slip39` -- SLIP-39 mnemonics, with their RS1024 checksum and digest share
  (docs/format/slip39.md);
* :mod:`.pycryptodome` -- pycryptodome's and ssss's GF(2^128) shares. **Hazmat-grade**:
  these shares carry no threshold, checksum or set id, so a mistyped or foreign share
  silently gives a wrong secret (docs/format/pycryptodome.md says what is still checked);
* :mod:`.convert` -- combine in one format and re-split in another, in memory.

keysplit's own formats (shares, sealed shares, keyrings, streams) live elsewhere; nothing
in keysplit's core imports this package, so ``import keysplit`` never loads it.
"""

from __future__ import annotations

from . import convert, pycryptodome, slip39, vault

__all__ = ["convert", "pycryptodome", "slip39", "vault"]
