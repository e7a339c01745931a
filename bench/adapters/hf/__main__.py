"""`python -m bench.adapters.hf doctor [SUITE...]` and `python -m bench.adapters.hf prefetch SUITE...`.

doctor    which models and checkpoint files the suites' diffusers / flow-map samplers (and each adapter's
          default) need, and whether each is on this machine (Hugging Face cache or local path). Reads the
          cache layout only: never touches the network.
prefetch  prints the `hf download` commands that fetch exactly what the suites need (run them on a machine
          with internet, then copy the cache, $HF_HOME/hub, to the offline cluster). Downloads nothing itself.
"""

from __future__ import annotations

import argparse
import glob
import shlex
import sys
from pathlib import Path

from bench.adapters.hf.weights import TINY, _looks_local, configured_models, offline_status, split_repo_file


def _samplers(paths: list[str]) -> list[tuple[str, object]]:
    import yaml

    from bench.adapters.registry import build_sampler

    out = []
    for p in paths:
        data = yaml.safe_load(Path(p).read_text(encoding="utf-8")) or {}
        for s in data.get("samplers") or []:
            try:
                out.append((f"{Path(p).name}:{s.get('id')}", build_sampler(s["adapter"], dict(s.get("options") or {}))))
            except Exception:  # not one of ours, or not installed: nothing to fetch for it here
                continue
    return out


def prefetch_commands(paths: list[str]) -> list[str]:
    """`hf download` commands (one per repository or file) for every hub-hosted weight the suites use."""
    cmds: list[str] = []
    seen: set[str] = set()
    for _, sampler in _samplers(paths):
        variant = getattr(sampler, "variant", None)
        for spec, kind in configured_models(sampler):
            if kind == "local" or spec.startswith(TINY) or _looks_local(spec) or spec in seen:
                continue
            seen.add(spec)
            if kind == "file":
                repo, filename = split_repo_file(spec)
                cmds.append(f"hf download {shlex.quote(repo)} {shlex.quote(filename)}")
            elif kind == "lora":
                cmds.append(f"hf download {shlex.quote(spec)} pytorch_lora_weights.safetensors")
            else:  # a pipeline (or a VAE): configs, tokenizers and the weights of the variant used
                weights = f"*/*.{variant}.safetensors" if variant else "*/*.safetensors"
                parts = ["hf download", shlex.quote(spec), '--include "*.json"', '--include "*.txt"',
                         f'--include "{weights}"', '--include "*.safetensors"' if kind == "vae" else ""]
                if not variant:
                    parts.append('--exclude "*/*.fp16.safetensors"')
                cmds.append(" ".join(p for p in parts if p))
    return cmds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.adapters.hf", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("doctor", help="which configured models are present locally")
    d.add_argument("suites", nargs="*", help="suite files (default: suites/*.yaml)")
    f = sub.add_parser("prefetch", help="print the hf download commands for the suites' weights")
    f.add_argument("suites", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "doctor":
        rows = offline_status(args.suites or None)
        for name, ok, detail in rows:
            print(f"  {'ok     ' if ok else 'missing'} {name}: {detail}")
        return 0
    paths = [q for s in args.suites for q in (sorted(glob.glob(s)) or [s])]
    cmds = prefetch_commands(paths)
    print("# Run on a machine with internet access, then copy the Hugging Face cache ($HF_HOME/hub, default "
          "~/.cache/huggingface/hub)\n# to the same place on the offline machines and set HF_HUB_OFFLINE=1 there.")
    print("\n".join(cmds) if cmds else "# nothing to fetch: every model is local or tiny:")
    return 0


if __name__ == "__main__":
    sys.exit(main())
