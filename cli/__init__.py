"""The command lines ``kspace-sim`` and ``kmtr`` (typer apps; thin: parse, call the library, print)."""
