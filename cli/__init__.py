"""The keysplit command line (installed as ``keysplit_cli``): a thin shell over the library."""

# Importing the app first registers every command module in a fixed order, so importing a
# single command module directly (as tests do) never meets a half-initialised sibling.
from . import app as _app  # noqa: F401
