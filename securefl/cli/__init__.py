"""The ``securefl`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import securefl
from securefl.secagg.defaults import DEFAULT_CORRUPTION_RATE


def _numbers(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def _bench(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import asdict

    from securefl.bench.compare import BASELINES, compare, format_comparisons
    from securefl.bench.secagg import (
        Scenario,
        format_table,
        inputs,
        load_scenarios,
        plot,
        run,
        sweep,
    )
    from securefl.errors import BackendUnavailable

    baselines = [b.strip() for b in (args.compare or "").split(",") if b.strip()]
    if set(baselines) - set(BASELINES):
        parser.error(f"--compare takes a list of {', '.join(BASELINES)}")
    if "flower" in baselines and args.protocol == "ckks":
        parser.error("--compare flower compares SecAgg rounds: use --protocol secagg(+)")
    if args.config:
        try:
            scenarios = load_scenarios(args.config)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
    else:
        base = Scenario(
            dropout=args.dropout,
            graph=args.graph,
            protocol=args.protocol,
            degree=args.degree,
            threshold=args.threshold,
            corruption=args.corruption_rate,
            bits=args.bits,
            processes=args.processes,
            # Flower's round runs on one thread: so does securefl's, unless told otherwise.
            threads=args.threads if args.threads or not baselines else 1,
            measure_memory=args.memory,
        )
        scenarios = sweep(base, _numbers(args.clients), _numbers(args.dim))
    outcomes = []
    for i, scenario in enumerate(scenarios, 1):
        if len(scenarios) > 1:
            print(
                f"[{i}/{len(scenarios)}] n={scenario.clients} d={scenario.dimension:,}",
                file=sys.stderr,
                flush=True,
            )
        data = inputs(scenario)  # once: securefl and every baseline get the same arrays
        outcome = run(scenario, data)
        print(format_table(outcome))
        if baselines and not outcome.completed:
            print("comparison skipped: securefl's round aborted")
        elif baselines:
            try:
                print(format_comparisons(compare(scenario, outcome, baselines, data)))
            except BackendUnavailable as exc:
                parser.error(str(exc))
        outcomes.append(outcome)
    if args.json:
        with open(args.json, "w") as f:
            if len(outcomes) == 1:
                f.write(outcomes[0].to_json())
            else:
                json.dump({"schema": 1, "results": [asdict(o) for o in outcomes]}, f, indent=2)
    if args.plot:
        plot(outcomes, args.plot)
        print(f"plot written to {args.plot}")
    return 0 if all(o.completed for o in outcomes) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="securefl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"securefl {securefl.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="federated training on the UCI Heart Disease hospitals, plain vs secure",
        description="Trains a PyTorch model by FedAvg/FedProx across the four hospitals "
        "(Cleveland, Hungary, VA Long Beach, Switzerland) with plaintext aggregation and "
        "with each secure protocol, and prints accuracy/AUC per hospital, time, bytes "
        "and the difference of the global weights.",
    )
    demo.add_argument(
        "--protocols",
        default=None,
        help="comma-separated subset of secagg,secagg+,ckks (default: all available)",
    )
    demo.add_argument("--rounds", type=int, default=20, help="FedAvg rounds")
    demo.add_argument("--local-epochs", type=int, default=2, help="epochs per round")
    demo.add_argument("--mu", type=float, default=0.0, help="FedProx mu (0: FedAvg)")
    demo.add_argument(
        "--dropout", type=float, default=0.0, help="probability that a hospital misses a round"
    )
    demo.add_argument("--model", choices=["logreg", "mlp"], default="logreg", help="model")
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fixes the data split, model initialisation and dropout schedule; the DP "
        "noise (--dp-epsilon) stays fresh randomness each run unless --dp-reproducible",
    )
    demo.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    demo.add_argument(
        "--dp-epsilon",
        metavar="LIST",
        help="run the distributed-DP study instead: DP-FedSGD at each epsilon of a "
        "comma-separated list (whole run, 'inf' = no noise), e.g. 1,3,8,inf",
    )
    demo.add_argument("--dp-delta", type=float, default=1e-5, help="delta of the DP study")
    demo.add_argument("--dp-rounds", type=int, default=60, help="DP-FedSGD rounds")
    demo.add_argument(
        "--dp-mechanism", choices=["discrete_gaussian", "skellam"], default="discrete_gaussian"
    )
    demo.add_argument("--dp-bits", type=int, default=32, help="SecAgg ring bits for DP")
    demo.add_argument("--plot", metavar="PNG", help="with --dp-epsilon: plot utility vs epsilon")
    demo.add_argument(
        "--dp-reproducible",
        action="store_true",
        help="with --dp-epsilon: draw the DP noise from an AES-CTR stream seeded by --seed, "
        "so runs repeat exactly. For experiments only: whoever knows the seed can remove "
        "the noise, so such a run is not private",
    )

    round_ = sub.add_parser(
        "round",
        help="one secure aggregation round over synthetic hospital updates",
        description="Simulated hospitals run a full SecAgg+ session (one drops out); "
        "the server recovers only the weighted mean of their updates.",
    )
    round_.add_argument("--clients", type=int, default=8, help="simulated hospitals (>= 3)")
    round_.add_argument("--dim", type=int, default=1_000_000, help="update length")
    round_.add_argument("--bits", type=int, default=32, help="the ring Z_2^bits")
    round_.add_argument("--clip", type=float, default=1.0, help="values are clipped to +-clip")

    bench = sub.add_parser(
        "bench",
        help="time one SecAgg / SecAgg+ / CKKS round in-process",
        description="One secure aggregation round with simulated clients: seconds per "
        "phase, bytes per client, error against the plain weighted mean.",
    )
    bench.add_argument("--clients", default="50", help="client count, or a list: 10,50,100")
    bench.add_argument("--dim", default="1000000", help="dimension, or a list: 1e5,1e6")
    bench.add_argument("--config", metavar="TOML", help="scenarios from a TOML file")
    bench.add_argument("--plot", metavar="PNG", help="draw time vs clients and vs dimension")
    bench.add_argument(
        "--dropout", type=float, default=0.1, help="fraction of clients that vanish after ShareKeys"
    )
    bench.add_argument(
        "--protocol",
        choices=["secagg", "secagg+", "ckks"],
        default=None,
        help="secagg (complete graph), secagg+ (Harary graph) or ckks (default: by --graph)",
    )
    bench.add_argument(
        "--graph", choices=["complete", "harary"], default="harary", help="neighbourhood graph"
    )
    bench.add_argument(
        "--degree",
        type=int,
        default=None,
        help="k for the Harary graph (default: the parameter chooser's for --dropout and "
        "--corruption-rate; n - 1 or more is the complete graph)",
    )
    bench.add_argument(
        "--threshold", type=int, default=None, help="t (default: the chooser's, or k // 2 + 1)"
    )
    bench.add_argument(
        "--corruption-rate",
        type=float,
        default=DEFAULT_CORRUPTION_RATE,
        help="fraction of clients that may collude with the server, for the chooser",
    )
    bench.add_argument("--bits", type=int, default=32, help="the ring Z_2^bits")
    bench.add_argument(
        "--processes", type=int, default=None, help="run clients in this many worker processes"
    )
    bench.add_argument(
        "--threads", type=int, default=None, help="threads per party (default: all cores)"
    )
    bench.add_argument("--memory", action="store_true", help="measure server peak memory")
    bench.add_argument(
        "--compare",
        metavar="LIST",
        help="also run the scenario through flower (Flower's SecAgg+) and/or tenseal "
        "(TenSEAL's CKKS sum) in this process and print the ratios",
    )
    bench.add_argument("--json", metavar="PATH", help="also write the results as JSON")

    from securefl.cli.service import add_commands

    add_commands(sub)  # serve, join: the network service
    for command in sub.choices.values():  # every subcommand's --help shows its defaults
        command.formatter_class = argparse.ArgumentDefaultsHelpFormatter

    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except securefl.ConfigError as exc:
        # A configuration the library refuses is the user's input, not a crash.
        parser.error(str(exc))


# What each subcommand imports that a plain `pip install securefl` does not bring.
_EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "demo": (("torch", "torch"),),
    "serve": (("grpc", "service"),),
    "join": (("grpc", "service"),),
}


def _require_extras(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    import importlib.util

    needed = list(_EXTRAS.get(args.command, ()))
    if getattr(args, "dp_epsilon", None):
        needed.append(("dp_accounting", "dp"))
    for module, extra in needed:
        if importlib.util.find_spec(module) is None:
            parser.error(f"securefl {args.command} needs {module}: pip install 'securefl[{extra}]'")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _require_extras(parser, args)
    if getattr(args, "plot", None):
        import importlib.util

        # Fail before a long run, not after it.
        if importlib.util.find_spec("matplotlib") is None:
            parser.error("--plot needs matplotlib: pip install matplotlib")
    if getattr(args, "handler", None) is not None:
        return int(args.handler(args))
    if args.command == "bench":
        return _bench(parser, args)
    if args.command == "round":
        from securefl.demo.one_round import run

        return run(clients=args.clients, dim=args.dim, bits=args.bits, clip=args.clip)
    if args.command == "demo":
        from securefl.demo.heart import SECURE, DemoOptions
        from securefl.demo.heart import run as run_demo

        if args.protocols:
            protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip())
            unknown = set(protocols) - set(SECURE)
            if unknown:
                parser.error(f"unknown protocols: {', '.join(sorted(unknown))}")
        else:
            protocols = tuple(p for p in SECURE if p != "ckks" or securefl.ckks_available())
        options = DemoOptions(
            protocols=protocols,
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            mu=args.mu,
            dropout=args.dropout,
            seed=args.seed,
            model=args.model,
        )
        if args.dp_epsilon:
            from securefl.demo.heart import DPOptions, run_dp

            try:
                epsilons = tuple(float(e) for e in args.dp_epsilon.split(",") if e.strip())
            except ValueError:
                parser.error(f"--dp-epsilon: not a list of numbers: {args.dp_epsilon!r}")
            if not epsilons or min(epsilons) <= 0:
                parser.error("--dp-epsilon needs positive epsilons (or inf)")
            dp_options = DPOptions(
                epsilons=epsilons,
                delta=args.dp_delta,
                rounds=args.dp_rounds,
                bits=args.dp_bits,
                mechanism=args.dp_mechanism,
                plot=args.plot,
                reproducible_noise=args.dp_reproducible,
            )
            try:
                return run_dp(options, dp_options, json_path=args.json)
            except securefl.ConfigError as exc:
                parser.error(str(exc))
        if args.plot or args.dp_reproducible:
            parser.error("--plot and --dp-reproducible (for the demo) need --dp-epsilon")
        return run_demo(options, json_path=args.json)
    return 2  # pragma: no cover - argparse enforces a command
