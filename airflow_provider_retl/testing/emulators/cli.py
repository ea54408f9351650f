"""Run emulators as a foreground process (for the demo, a UI user or another language).

    retl-emulators hubspot --port 8081 --token demo-token --rate-limit 190
    retl-emulators webhook --port 8082 --secret s3cret
    retl-emulators mailchimp --port 8083 --api-key 0123456789abcdef0123456789abcdef-us6
    retl-emulators all --hubspot-port 8081 --webhook-port 8082

(or ``python -m airflow_provider_retl.testing.emulators ...``). Each started
emulator prints one line ``<kind> emulator listening on <url>``; the process
runs until SIGINT or SIGTERM. Faults can be switched while it runs with
``POST <url>/_emulator/faults``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from airflow_provider_retl.testing.emulators import RunningEmulator, start_emulator
from airflow_provider_retl.testing.emulators.faults import Faults
from airflow_provider_retl.testing.emulators.hubspot import DEFAULT_TOKEN
from airflow_provider_retl.testing.emulators.mailchimp import DEFAULT_API_KEY as MAILCHIMP_API_KEY
from airflow_provider_retl.testing.emulators.mailchimp import DEFAULT_LIST_ID as MAILCHIMP_LIST_ID


def _rate_limit(text: str) -> int | None:
    return None if text.lower() in ("none", "off", "0") else int(text)


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faults (also switchable at runtime via POST /_emulator/faults)")
    group.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500/502/503")
    group.add_argument("--reset-rate", type=float, default=0.0, help="fraction of connections reset, no response")
    group.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    group.add_argument("--timeout-rate", type=float, default=0.0, help="fraction of requests stalled --slow-seconds")
    group.add_argument("--slow-seconds", type=float, default=30.0)
    group.add_argument("--lost-response-rate", type=float, default=0.0, help="fraction applied, then reset")
    group.add_argument("--malformed-rate", type=float, default=0.0, help="fraction applied, answered with bad JSON")
    group.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")


def _add_hubspot_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hubspot")
    group.add_argument("--token", action="append", dest="tokens", help=f"accepted bearer token (default {DEFAULT_TOKEN}); repeatable")
    group.add_argument("--any-token", action="store_true", help="accept any non-empty bearer token")
    group.add_argument("--rate-limit", type=_rate_limit, default=190, help="requests per window; 'none' disables")
    group.add_argument("--rate-window", type=float, default=10.0, help="rolling window in seconds")
    group.add_argument("--no-strict-properties", action="store_true", help="accept unknown properties")


def _add_webhook_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("webhook")
    group.add_argument("--secret", default="s3cret", help="HMAC secret of the signatures")
    group.add_argument("--reject-marker", default=None, help="refuse upserted records whose fields contain this")


def _add_mailchimp_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mailchimp")
    group.add_argument("--api-key", action="append", dest="api_keys",
                       help=f"accepted API key (default {MAILCHIMP_API_KEY}); repeatable")
    group.add_argument("--any-key", action="store_true", help="accept any key ending in -<datacenter>")
    group.add_argument("--datacenter", default="us6", help="data centre the keys must end with")
    group.add_argument("--list", action="append", dest="lists", help=f"audience id (default {MAILCHIMP_LIST_ID}); repeatable")
    group.add_argument("--max-connections", type=_rate_limit, default=10, help="requests in flight per account; 'none' disables")
    group.add_argument("--processing-seconds", type=float, default=0.0, help="seconds each request stays in flight")


def _mailchimp_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "api_keys": None if args.any_key else (args.api_keys or [MAILCHIMP_API_KEY]),
        "datacenter": args.datacenter,
        "lists": args.lists or [MAILCHIMP_LIST_ID],
        "max_connections": args.max_connections,
        "processing_seconds": args.processing_seconds,
        "faults": _faults(args),
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``retl-emulators`` argument parser."""
    parser = argparse.ArgumentParser(prog="retl-emulators", description="Local emulators of destination APIs.")
    commands = parser.add_subparsers(dest="command", required=True)
    hubspot = commands.add_parser("hubspot", help="HubSpot CRM v3")
    hubspot.add_argument("--host", default="127.0.0.1")
    hubspot.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    _add_hubspot_options(hubspot)
    _add_fault_options(hubspot)
    webhook = commands.add_parser("webhook", help="signed webhook receiver")
    webhook.add_argument("--host", default="127.0.0.1")
    webhook.add_argument("--port", type=int, default=8082, help="0 picks a free port")
    _add_webhook_options(webhook)
    _add_fault_options(webhook)
    mailchimp = commands.add_parser("mailchimp", help="Mailchimp Marketing API v3")
    mailchimp.add_argument("--host", default="127.0.0.1")
    mailchimp.add_argument("--port", type=int, default=8083, help="0 picks a free port")
    _add_mailchimp_options(mailchimp)
    _add_fault_options(mailchimp)
    both = commands.add_parser("all", help="both emulators in one process")
    both.add_argument("--host", default="127.0.0.1")
    both.add_argument("--hubspot-port", type=int, default=8081)
    both.add_argument("--webhook-port", type=int, default=8082)
    _add_hubspot_options(both)
    _add_webhook_options(both)
    _add_fault_options(both)
    return parser


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        latency=args.latency,
        timeout_rate=args.timeout_rate,
        slow_seconds=args.slow_seconds,
        lost_response_rate=args.lost_response_rate,
        malformed_rate=args.malformed_rate,
        seed=args.seed,
    )


def _hubspot_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "tokens": None if args.any_token else (args.tokens or [DEFAULT_TOKEN]),
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "strict_properties": not args.no_strict_properties,
        "faults": _faults(args),
    }


def _webhook_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"secret": args.secret, "reject_marker": args.reject_marker, "faults": _faults(args)}


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulators named on the command line and serve until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    running: list[RunningEmulator] = []
    try:
        if args.command in ("hubspot", "all"):
            port = args.port if args.command == "hubspot" else args.hubspot_port
            running.append(start_emulator("hubspot", host=args.host, port=port, **_hubspot_options(args)))
        if args.command in ("webhook", "all"):
            port = args.port if args.command == "webhook" else args.webhook_port
            running.append(start_emulator("webhook", host=args.host, port=port, **_webhook_options(args)))
        if args.command == "mailchimp":
            running.append(start_emulator("mailchimp", host=args.host, port=args.port, **_mailchimp_options(args)))
    except Exception as exc:
        for emulator in running:
            emulator.stop()
        print(f"retl-emulators: {exc}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for emulator in running:
        print(f"{emulator.emulator.kind} emulator listening on {emulator.url}", flush=True)
    # wait() with a timeout keeps the main thread responsive to signals.
    while not stop.wait(0.5):
        pass
    for emulator in running:
        emulator.stop()
    print("emulators stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
