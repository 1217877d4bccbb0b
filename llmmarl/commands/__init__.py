"""The command line's commands, one module per group; :mod:`llmmarl.cli` assembles them into one typer app."""
