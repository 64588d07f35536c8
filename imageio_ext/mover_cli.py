"""The `ovault-mover` command line."""
import sys


def main(argv=None):
    print("ovault-mover: not yet implemented", file=sys.stderr)
    return 2
