"""One module per command group as users see it; ``cli/app.py`` places each in the tree.

Every module owns a ``typer.Typer()`` called ``app`` holding its commands. A command
module imports only the library and the shared ``cli/_*.py`` helpers, never another
command module nor the app (tests/cli/test_cli_plumbing.py checks both).
"""
