"""**Hazardous materials.** Primitives that do no verification of their own.

Everything here is correct for what it does and dangerous for what it does not do: raw
Shamir shares have no set id, no checksum and no recovery check (a wrong share gives a
wrong key, silently); GF(2^8) arithmetic is a building block; ``hpke`` is one bare RFC
9180 suite without framing or key ids; ``keywrap`` is RFC 3394 over raw keys, with no binding of a
wrapped key to what it is for. Use :mod:`keysplit` (``Share``, ``split``, ``combine``,
``seal_share``, ``encrypt_file``, ``Keyring``) unless you are building one of those.

Only keysplit's own modules import this package (``tests/contract/test_layering.py`` checks it);
the CLI never does. This is a documentation warning: importing it warns nobody at
runtime. pycryptodome's share format, as weak as these, lives with the other foreign
formats in :mod:`keysplit.interop.pycryptodome`, fenced by the same test.
"""
