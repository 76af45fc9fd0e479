"""Floor 5: the command line (`python -m core ...`): argument parsing and the commands."""
