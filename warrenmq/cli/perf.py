"""`warren-perf`: benchmark any AMQP 0-9-1 broker (RabbitMQ PerfTest's role).

    warren-perf --uri amqp://guest:guest@127.0.0.1:5672/ throughput --duration 10
    warren-perf --uri ... idle-connections --connections 1000 --broker-pid PID --json
    warren-perf --uri ... confirm --persistent --messages 1000000 --queue deep
    warren-perf --uri ... drain --queue deep --prefetch 100
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from warrenmq.perf import idle, report, scenarios
from warrenmq.perf.runner import install_event_loop_policy

SCENARIOS: dict[str, tuple[Callable[[scenarios.Options], dict[str, Any]], str]] = {
    "publish": (scenarios.scenario_publish,
                "publish only: N producers, for D seconds or M messages"),
    "confirm": (scenarios.scenario_confirm,
                "publish with publisher confirms and a window of outstanding confirms"),
    "throughput": (scenarios.scenario_throughput,
                   "producer -> queue -> consumer (prefetch, multiple acks)"),
    "latency": (scenarios.scenario_latency,
                "fixed publish rate; end-to-end latency percentiles"),
    "drain": (scenarios.scenario_drain,
              "one consumer empties an existing queue (--queue): drain rate"),
    "fanout": (scenarios.scenario_fanout,
               "one producer -> fanout exchange -> N queues, one consumer each"),
    "idle-connections": (idle.scenario_idle_connections,
                         "N idle connections with one channel each; broker RSS per connection"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warren-perf", description="Load generator for AMQP 0-9-1 brokers.")
    parser.add_argument("--uri", default="amqp://guest:guest@127.0.0.1:5672/",
                        help="broker URI (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--broker-pid", type=int, default=None,
                        help="broker pid (beam.smp for RabbitMQ): sample its RSS and CPU")
    sub = parser.add_subparsers(dest="scenario", required=True, metavar="SCENARIO")
    for name, (_, help_text) in SCENARIOS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "idle-connections":
            p.add_argument("--connections", "-n", type=int, default=1000)
            p.add_argument("--hold", dest="hold_s", type=float, default=5.0,
                           help="seconds to hold the connections open (default 5)")
        else:
            _add_flow_options(p, name)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        p.add_argument("--broker-pid", type=int, default=argparse.SUPPRESS)
    return parser


def _add_flow_options(p: argparse.ArgumentParser, name: str) -> None:
    if name != "drain":
        p.add_argument("--duration", "-z", dest="duration_s", type=float, default=10.0,
                       help="measurement window in seconds, after the warm-up (default 10)")
        p.add_argument("--warmup", dest="warmup_s", type=float, default=2.0,
                       help="warm-up seconds not counted (default 2)")
        p.add_argument("--size", "-s", dest="size_bytes", type=int, default=1024,
                       help="message body size in bytes (default 1024)")
        p.add_argument("--rate", "-r", type=float,
                       default=1000.0 if name == "latency" else 0.0,
                       help="publish rate per producer in msg/s, 0 = unlimited")
        p.add_argument("--producers", "-x", type=int, default=1)
        p.add_argument("--persistent", action="store_true",
                       help="delivery_mode 2 messages and durable queues")
        p.add_argument("--durable", action="store_true", help="durable queues")
        p.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    if name != "fanout":
        p.add_argument("--queue", "-u", default="", required=name == "drain",
                       help="use this queue: declared if missing, never deleted"
                            if name != "drain" else "the queue to empty")
    if name in ("publish", "confirm"):
        p.add_argument("--messages", "-C", type=int, default=0,
                       help="publish this many messages in total instead of for --duration")
        p.add_argument("--max-duration", dest="max_duration_s", type=float, default=0.0,
                       help="with --messages: stop after this many seconds even if not all "
                            "were sent (0 = no limit)")
    if name == "drain":
        p.add_argument("--messages", "-C", type=int, default=0,
                       help="take at most this many (default: the depth at the start)")
        p.add_argument("--stall", dest="stall_s", type=float, default=60.0,
                       help="fail when nothing arrives for this many seconds (default 60)")
    if name == "confirm":
        p.add_argument("--confirm", "-c", type=int, default=100,
                       help="outstanding publisher confirms allowed (default 100)")
    if name in ("throughput", "latency", "fanout", "drain"):
        p.add_argument("--prefetch", "-q", type=int, default=100)
        p.add_argument("--multi-ack-every", "-A", type=int, default=10,
                       help="ack with multiple=true every N deliveries (1 = ack each)")
    if name in ("throughput", "latency"):
        p.add_argument("--consumers", "-y", type=int, default=1)
    if name == "fanout":
        p.add_argument("--queues", type=int, default=10)
        p.add_argument("--consumer-procs", type=int, default=2,
                       help="processes the per-queue consumers are spread over")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fields = {k: v for k, v in vars(args).items()
              if k in scenarios.Options.__dataclass_fields__}
    opts = scenarios.Options(**fields)
    loop_name = install_event_loop_policy()
    run, _ = SCENARIOS[args.scenario]
    try:
        info = scenarios.broker_info(opts)
        metrics = run(opts)
    except Exception as exc:
        print(f"warren-perf: {args.scenario} failed: {exc}", file=sys.stderr)
        return 1
    result = {
        "scenario": args.scenario,
        "uri": scenarios.AmqpUri.parse(opts.uri).redacted(),
        "broker": info,
        "client_loop": loop_name,
        "params": scenarios.describe(opts),
        "metrics": metrics,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(report.render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
