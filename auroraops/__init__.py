"""The `auroraops` command line: one entry point, one thin module per command."""
