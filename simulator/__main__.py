"""``python -m simulator``: run the simulator standalone (the product's CLI offers ``aperture simulator`` too).

Handy for manual exploration and for load tests that want the simulator in its own process.
"""

from __future__ import annotations

import argparse
import logging

from simulator.config import SimulatorConfig
from simulator.server import SimulatorHandle, serve


def main(argv: list[str] | None = None) -> None:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m simulator", description="Faithful Vidmob API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--api-key", default=defaults.api_key)
    parser.add_argument("--pending-s", type=float, default=defaults.pending_s)
    parser.add_argument("--processing-s", type=float, default=defaults.processing_s)
    parser.add_argument("--scoring-s", type=float, default=defaults.scoring_s)
    # Durations that grow with the job (simulator/workload.py); the defaults keep the fixed timings.
    parser.add_argument("--processing-per-asset-s", type=float, default=defaults.processing_per_asset_s)
    parser.add_argument("--processing-noise-sigma", type=float, default=defaults.processing_noise_sigma)
    parser.add_argument("--hash-asset-sizes", action="store_true")
    parser.add_argument("--noise-seed", type=int, default=defaults.noise_seed)
    parser.add_argument("--log-requests", action="store_true")
    parser.add_argument(
        "--rate-limit-per-s", type=float, default=0.0, help="429 past this many requests per endpoint per second"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = SimulatorConfig(
        api_key=args.api_key,
        pending_s=args.pending_s,
        processing_s=args.processing_s,
        scoring_s=args.scoring_s,
        processing_per_asset_s=args.processing_per_asset_s,
        processing_noise_sigma=args.processing_noise_sigma,
        hash_asset_sizes=args.hash_asset_sizes,
        noise_seed=args.noise_seed,
        log_requests=args.log_requests,
        rate_limit_per_s=args.rate_limit_per_s,
    )

    def ready(handle: SimulatorHandle) -> None:
        print(f"Vidmob API simulator on {handle.url} (Ctrl-C to stop)", flush=True)

    serve(args.host, args.port, config, on_ready=ready)


if __name__ == "__main__":
    main()
