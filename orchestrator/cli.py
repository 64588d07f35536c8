"""The `ovault` command line."""
import sys


def main(argv=None):
    print("ovault: not yet implemented", file=sys.stderr)
    return 2
