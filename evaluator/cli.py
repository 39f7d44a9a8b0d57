"""``apb``: the benchmark's command line. Each command lives in ``evaluator/commands/<name>.py`` and is
imported only when it runs, so ``apb validate`` never pays for importing torch."""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from evaluator.errors import APBError
from evaluator.untrusted.workflow_log import commands_stopped

# name -> one-line help; the module is evaluator.commands.<name with - as _>
COMMANDS = {
    "new": "scaffold submissions/<ap_key>/ (taxonomy.json and a commented manifest.yaml)",
    "prepare": "turn a training checkpoint into a clean safetensors file and its manifest entry",
    "validate": "check every schema and cross-file rule of the repository (or of the given paths)",
    "lock": "download entries that lack a sha256 and pin it in their manifest",
    "check": "fetch, load and check a model or every model of an AP: compliance, sanity, sparsity, clean accuracy",
    "evaluate": "evaluate models with AutoAttack and HO-FMN and write their records (resumable, shardable)",
    "merge": "combine the shards of one evaluation into the record a single run would give",
    "leaderboard": "render leaderboard/, taxonomy/README.md and the security curves from the records",
    "docs": "write the generated documentation pages (docs/flags.md: the flag catalogue)",
    "site": "build the static leaderboard site (tables, curve comparison, analysis, downloads) into a folder",
    "import-distances": "import the original benchmark's HO-FMN distance pickles as per-sample sidecars",
    "demo": "offline end-to-end run on a small embedded example submission",
    "ci": "the steps of .github/workflows: plan, collect, ingest, report, publish, check-diff; doctor checks the "
          "deployment's GitHub settings (docs/automation.md)",
}


def _top_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="apb",
        description="Adversarial Pruning Benchmark: validate submissions, check and evaluate checkpoints, "
        "render the leaderboard.",
        epilog=f"commands:\n{listing}\n\nrun 'apb <command> --help' for a command's options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("--version", action="store_true", help="print the evaluator version and exit")
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        from evaluator import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    module = importlib.import_module(f"evaluator.commands.{name.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=f"apb {name}", description=COMMANDS[name])
    module.configure_parser(parser)
    args = parser.parse_args(rest)
    with commands_stopped() as token:  # under GitHub Actions: nothing printed from a file becomes a workflow command
        try:
            return int(module.run(args) or 0)
        except APBError as error:
            for problem in error.problems:
                print(f"error: {problem}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; finished chunks are kept, run the same command again to resume", file=sys.stderr)
            return 130
        except Exception:
            if token is None:
                raise
            traceback.print_exc()  # while commands are still stopped: a traceback can quote file-borne text
            return 1


if __name__ == "__main__":
    sys.exit(main())
