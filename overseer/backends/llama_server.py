"""The embedded model server's own process: llama.cpp's native HTTP server through ``xllamacpp``.

Run as ``python -m overseer.backends.llama_server --model FILE --port N ...`` by ``local_model``;
nothing else imports it. It is a separate process, not a thread of overseer, because:

- a native crash (SIGILL on a CPU that lacks an instruction of the prebuilt wheel, SIGSEGV in
  llama.cpp) must end this process, not overseer: overseer then reports the signal in one line;
- ``xllamacpp.Server`` has no stop method and its destructor can hang joining its thread, while a
  process always stops (SIGTERM, then SIGKILL) and frees its port with it;
- the constructor holds the GIL for the whole model load, which would freeze overseer's display;
- Ctrl-C belongs to overseer: this process runs in its own session and ignores SIGINT as well.

It imports nothing from overseer (a quick start), logs errors only, to stderr (the parent keeps
them in a file to quote when it fails), and serves until it is killed.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The server's settings, as ``local_model.server_command`` writes them."""
    parser = argparse.ArgumentParser(prog="overseer.backends.llama_server")
    parser.add_argument("--model", required=True, help="the .gguf file")
    parser.add_argument("--alias", required=True, help="the model name the server answers to")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=4, help="slots decoded at the same time")
    parser.add_argument(
        "--ctx-per-slot", type=int, default=4096, help="tokens of context a slot has"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeat-penalty", type=float, default=1.1)
    return parser.parse_args(list(argv))


def _params(args: argparse.Namespace) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = [args.alias]
    params.hostnames = [args.host]
    params.port = args.port
    # llama.cpp divides n_ctx among its slots: each slot gets exactly ctx-per-slot tokens, so a
    # long planning prompt fits whatever the other slots do (a unified cache lets them compete).
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx_per_slot * args.parallel
    params.kv_unified = False
    if args.threads is not None:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    # llama.cpp's default is 1.0 (off); without a penalty a 135M model loops ("a myth, a myth").
    params.sampling.penalty_repeat = args.repeat_penalty
    params.endpoint_slots = True  # /slots: which requests are being decoded (tests, benchmarks)
    params.verbosity = 1  # errors only
    return params


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed; exit 1 with llama.cpp's error on stderr when the server cannot start."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import xllamacpp

    try:
        server = xllamacpp.Server(_params(args))
    except RuntimeError as exc:
        sys.exit(f"llama.cpp server: {exc}")
    print(f"listening at {server.listening_address}", file=sys.stderr, flush=True)
    while True:  # SIGTERM's default action ends the process; ~Server never runs
        signal.pause()


if __name__ == "__main__":
    main()
