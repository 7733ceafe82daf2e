"""One module per `auroraops` command, each with `add_parser(subparsers)` and `run(args)`."""
