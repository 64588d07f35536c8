"""The development commands of `ovault`: `sandbox up|down` and `demo`.

They run the simulator, which the product does not ship; `orchestrator.cli`
registers them only when this package is importable (a checkout).
"""
from __future__ import annotations


def register(sub) -> None:
    from . import cli

    sb = sub.add_parser("sandbox", help="a complete oVirt lab on this machine (development)")
    cli.add_arguments(sb.add_subparsers(dest="sandbox_cmd", required=True))
    sb.set_defaults(func=cli.run)
    dm = sub.add_parser("demo", help="bring up the sandbox and the orchestrator and show ovault working")
    # Not inside the checkout: the embedded PostgreSQL runs as `postgres`, which
    # cannot enter a checkout under a 0700 home such as Debian's /root.
    dm.add_argument("--dir", default="/var/tmp/ovault-demo",
                    help="state directory (default /var/tmp/ovault-demo)")
    dm.add_argument("--exit", action="store_true", help="stop once the report is printed")
    # The demo's output is its report; its logs only speak up for problems.
    dm.set_defaults(func=_demo, log_level="WARNING")


def _demo(args) -> int:
    from . import demo  # the orchestrator's service: imported only to run it

    return demo.run(args)
