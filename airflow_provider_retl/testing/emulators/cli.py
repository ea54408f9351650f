"""Run emulators as a foreground process (for the demo, a UI user or another language).

    retl-emulators hubspot --port 8081 --token demo-token --rate-limit 190
    retl-emulators webhook --port 8082 --secret s3cret
    retl-emulators mailchimp --port 8083 --api-key 0123456789abcdef0123456789abcdef-us6
    retl-emulators braze --port 8088 --api-key my-rest-key --rate-limit 3000
    retl-emulators customerio --port 8087 --site-id mysite --api-key mykey --rate-limit 100
    retl-emulators salesforce --port 8084 --username me@example.com --password pw --security-token tok
    retl-emulators zendesk --port 8085 --email agent@example.com --api-token my-token
    retl-emulators all --hubspot-port 8081 --webhook-port 8082   # every emulator, each on its own port

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
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_retl.destinations import REGISTRY
from airflow_provider_retl.destinations.hubspot.emulator import DEFAULT_TOKEN
from airflow_provider_retl.destinations.mailchimp.emulator import DEFAULT_API_KEY as MAILCHIMP_API_KEY
from airflow_provider_retl.destinations.mailchimp.emulator import DEFAULT_LIST_ID as MAILCHIMP_LIST_ID
from airflow_provider_retl.destinations.salesforce import emulator as sf_emulator
from airflow_provider_retl.testing.emulators import RunningEmulator, start_emulator
from airflow_provider_retl.testing.emulators.faults import Faults


def _rate_limit(text: str) -> int | None:
    return None if text.lower() in ("none", "off", "0") else int(text)


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("faults (also switchable at runtime via POST /_emulator/faults)")
    group.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500/502/503")
    group.add_argument("--reset-rate", type=float, default=0.0, help="fraction of connections reset, no response")
    group.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    group.add_argument("--timeout-rate", type=float, default=0.0, help="fraction applied, answered --slow-seconds late")
    group.add_argument("--slow-seconds", type=float, default=30.0)
    group.add_argument(
        "--slow-apply-after",
        type=float,
        default=0.0,
        help="seconds into the stall a timed-out request is applied (0: at once)",
    )
    group.add_argument("--lost-response-rate", type=float, default=0.0, help="fraction applied, then reset")
    group.add_argument("--malformed-rate", type=float, default=0.0, help="fraction applied, answered with bad JSON")
    group.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")


def _add_hubspot_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hubspot")
    group.add_argument(
        "--token", action="append", dest="tokens", help=f"accepted bearer token (default {DEFAULT_TOKEN}); repeatable"
    )
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
    group.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted API key (default {MAILCHIMP_API_KEY}); repeatable",
    )
    group.add_argument("--any-key", action="store_true", help="accept any key ending in -<datacenter>")
    group.add_argument("--datacenter", default="us6", help="data centre the keys must end with")
    group.add_argument(
        "--list", action="append", dest="lists", help=f"audience id (default {MAILCHIMP_LIST_ID}); repeatable"
    )
    group.add_argument(
        "--max-connections", type=_rate_limit, default=10, help="requests in flight per account; 'none' disables"
    )
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


def _add_salesforce_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("salesforce")
    group.add_argument("--username", default=sf_emulator.DEFAULT_USERNAME, help="user of the password flow")
    group.add_argument("--password", default=sf_emulator.DEFAULT_PASSWORD)
    group.add_argument(
        "--security-token",
        default=sf_emulator.DEFAULT_SECURITY_TOKEN,
        help="appended to the password at login; 'none' for no token",
    )
    group.add_argument("--client-id", default=sf_emulator.DEFAULT_CLIENT_ID, help="connected app consumer key")
    group.add_argument("--client-secret", default=sf_emulator.DEFAULT_CLIENT_SECRET)
    group.add_argument("--token-lifetime", type=float, default=7200.0, help="seconds an access token lives")
    group.add_argument("--daily-limit", type=int, default=100_000, help="API requests allowed (Sforce-Limit-Info)")
    group.add_argument("--max-concurrent", type=_rate_limit, default=None, help="API requests in flight; 'none' off")
    group.add_argument("--bulk-processing-seconds", type=float, default=0.2, help="time a bulk job takes")


def _salesforce_options(args: argparse.Namespace) -> dict[str, Any]:
    token = None if str(args.security_token).lower() == "none" else args.security_token
    return {
        "users": {args.username: args.password},
        "security_token": token,
        "clients": {args.client_id: args.client_secret},
        "token_lifetime": args.token_lifetime,
        "daily_limit": args.daily_limit,
        "max_concurrent": args.max_concurrent,
        "bulk_processing_seconds": args.bulk_processing_seconds,
        "faults": _faults(args),
    }


def _add_customerio_options(parser: argparse.ArgumentParser) -> None:
    from airflow_provider_retl.destinations.customerio import emulator as cio

    group = parser.add_argument_group("customerio")
    group.add_argument("--site-id", default=cio.DEFAULT_SITE_ID, help="Site ID of the basic auth user name")
    group.add_argument("--api-key", default=cio.DEFAULT_API_KEY, help="Track API key (basic auth password)")
    group.add_argument("--any-credentials", action="store_true", help="accept any non-empty site id and key")
    group.add_argument("--region", choices=sorted(cio.REGIONS), default="us")
    group.add_argument("--rate-limit", type=_rate_limit, default=100, help="requests per window; 'none' disables")
    group.add_argument("--rate-window", type=float, default=1.0, help="rolling window in seconds")


def _customerio_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "credentials": {args.site_id: args.api_key},
        "any_credentials": args.any_credentials,
        "region": args.region,
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "faults": _faults(args),
    }


def _add_braze_options(parser: argparse.ArgumentParser) -> None:
    from airflow_provider_retl.destinations.braze.emulator import DEFAULT_API_KEY as BRAZE_API_KEY

    group = parser.add_argument_group("braze")
    group.add_argument(
        "--api-key",
        action="append",
        dest="braze_keys",
        help=f"accepted REST API key (default {BRAZE_API_KEY}); repeatable",
    )
    group.add_argument("--any-key", action="store_true", dest="braze_any_key", help="accept any non-empty key")
    group.add_argument("--rate-limit", type=_rate_limit, default=3000, help="/users/track requests per window")
    group.add_argument("--rate-window", type=float, default=3.0, help="fixed window in seconds")
    group.add_argument(
        "--max-per-request",
        type=int,
        default=None,
        help="objects per /users/track call across arrays (50 on MAU CY 24-25 plans)",
    )
    group.add_argument("--maintenance", action="store_true", help="answer /users/track 202 queued")


def _braze_options(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_retl.destinations.braze.emulator import DEFAULT_API_KEY as BRAZE_API_KEY

    return {
        "api_keys": None if args.braze_any_key else (args.braze_keys or [BRAZE_API_KEY]),
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "max_per_request": args.max_per_request,
        "maintenance": args.maintenance,
        "faults": _faults(args),
    }


def _add_zendesk_options(parser: argparse.ArgumentParser) -> None:
    from airflow_provider_retl.destinations.zendesk import emulator as zd

    group = parser.add_argument_group("zendesk")
    group.add_argument("--email", default=zd.DEFAULT_EMAIL, help="agent email of API token auth ({email}/token)")
    group.add_argument("--api-token", default=zd.DEFAULT_API_TOKEN, help="accepted API token")
    group.add_argument(
        "--oauth-token",
        action="append",
        dest="oauth_tokens",
        help=f"accepted OAuth bearer token (default {zd.DEFAULT_OAUTH_TOKEN}); repeatable",
    )
    group.add_argument("--subdomain", default=zd.DEFAULT_SUBDOMAIN)
    group.add_argument(
        "--user-field",
        action="append",
        dest="user_fields",
        default=[],
        help="custom user field KEY[:TYPE] (text, integer, decimal, checkbox, date ...); repeatable",
    )
    group.add_argument(
        "--organization-field",
        action="append",
        dest="organization_fields",
        default=[],
        help="custom organization field KEY[:TYPE]; repeatable",
    )
    group.add_argument("--processing-seconds", type=float, default=0.5, help="time a background job takes")
    group.add_argument("--max-active-jobs", type=int, default=zd.MAX_ACTIVE_JOBS, help="queued/working jobs allowed")
    group.add_argument("--rate-limit", type=_rate_limit, default=700, help="requests per window; 'none' disables")
    group.add_argument("--rate-window", type=float, default=60.0, help="rolling window in seconds")


def _zendesk_options(args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_retl.destinations.zendesk import emulator as zd

    def fields(specs: list[str]) -> dict[str, str]:
        return {key: kind or "text" for key, _, kind in (spec.partition(":") for spec in specs)}

    return {
        "api_tokens": {args.email: args.api_token},
        "oauth_tokens": args.oauth_tokens or [zd.DEFAULT_OAUTH_TOKEN],
        "subdomain": args.subdomain,
        "user_fields": fields(args.user_fields),
        "organization_fields": fields(args.organization_fields),
        "processing_seconds": args.processing_seconds,
        "max_active_jobs": args.max_active_jobs,
        "rate_limit": args.rate_limit,
        "rate_window": args.rate_window,
        "faults": _faults(args),
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``retl-emulators`` argument parser: one subcommand per emulator, plus ``all``."""
    parser = argparse.ArgumentParser(prog="retl-emulators", description="Local emulators of destination APIs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for kind, (help_text, port, add_options, _) in SUBCOMMANDS.items():
        command = commands.add_parser(kind, help=help_text)
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=port, help="0 picks a free port")
        add_options(command)
        _add_fault_options(command)
    every = commands.add_parser(
        "all",
        help="every emulator in one process ("
        + ", ".join(f"{kind} :{port}" for kind, (_, port, _, _) in SUBCOMMANDS.items())
        + "); HubSpot and the webhook take their options here, the others run with their defaults",
    )
    every.add_argument("--host", default="127.0.0.1")
    for kind, (_, port, _, _) in SUBCOMMANDS.items():
        every.add_argument(f"--{kind}-port", type=int, default=port, help=f"port of the {kind} emulator (0: free)")
    _add_hubspot_options(every)
    _add_webhook_options(every)
    _add_fault_options(every)
    return parser


#: The emulators whose own options ``all`` takes (their option names collide with no other's).
ALL_OPTIONS = ("hubspot", "webhook")


def _all_options(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """start_emulator kwargs of ``kind`` under ``all``: its own defaults, the fault switches given to ``all``."""
    if kind in ALL_OPTIONS:
        return SUBCOMMANDS[kind][3](args)
    own = argparse.ArgumentParser()
    SUBCOMMANDS[kind][2](own)
    defaults = own.parse_args([])
    for name, value in vars(args).items():
        if name in _FAULT_OPTIONS:
            setattr(defaults, name, value)
    return SUBCOMMANDS[kind][3](defaults)


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(
        error_rate=args.error_rate,
        reset_rate=args.reset_rate,
        latency=args.latency,
        timeout_rate=args.timeout_rate,
        slow_seconds=args.slow_seconds,
        slow_apply_after=args.slow_apply_after,
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


def _add_no_options(parser: argparse.ArgumentParser) -> None:
    """An emulator without options of its own (only the fault switches every emulator has)."""


def _fault_options_only(args: argparse.Namespace) -> dict[str, Any]:
    return {"faults": _faults(args)}


#: kind -> (add its options to a parser, read them back as start_emulator kwargs): the emulator's own
#: options; its help and default port come from the destination's spec.
OPTIONS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], dict[str, Any]]]] = {
    "hubspot": (_add_hubspot_options, _hubspot_options),
    "webhook": (_add_webhook_options, _webhook_options),
    "mailchimp": (_add_mailchimp_options, _mailchimp_options),
    "salesforce": (_add_salesforce_options, _salesforce_options),
    "zendesk": (_add_zendesk_options, _zendesk_options),
    "customerio": (_add_customerio_options, _customerio_options),
    "braze": (_add_braze_options, _braze_options),
}

#: kind -> (help, default port, add its options to a parser, read them back as start_emulator kwargs).
SUBCOMMANDS: dict[
    str,
    tuple[str, int, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], dict[str, Any]]],
] = {
    name: (spec.emulator.help, spec.emulator.port, *OPTIONS.get(name, (_add_no_options, _fault_options_only)))
    for name, spec in REGISTRY.items()
    if spec.emulator is not None
}


def _fault_option_names() -> frozenset[str]:
    parser = argparse.ArgumentParser()
    _add_fault_options(parser)
    return frozenset(vars(parser.parse_args([])))


_FAULT_OPTIONS = _fault_option_names()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulators named on the command line and serve until SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    running: list[RunningEmulator] = []
    try:
        if args.command == "all":
            for kind in SUBCOMMANDS:
                port = getattr(args, f"{kind}_port")
                running.append(start_emulator(kind, host=args.host, port=port, **_all_options(kind, args)))
        else:
            options = SUBCOMMANDS[args.command][3](args)
            running.append(start_emulator(args.command, host=args.host, port=args.port, **options))
    except Exception as exc:  # noqa: BLE001 - stop what started, then re-raise
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
