"""How a command of the command line ends in error: one line on stderr, an exit code."""

from __future__ import annotations

from typing import NoReturn

import typer


def die(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
