"""The keysplit command line (installed as ``keysplit_cli``): a thin shell over the library.

The app and its command registration: :mod:`.app`.
"""
