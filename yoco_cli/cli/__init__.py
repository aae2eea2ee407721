"""The command-line shell: a thin layer of Typer commands over the library."""
