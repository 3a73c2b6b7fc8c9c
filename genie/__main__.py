"""The `genie` command: `genie <verb> ...` dispatches to the module of that verb."""

from __future__ import annotations

import importlib
import sys

from genie import cli, host_memory

VERBS = {
    "demo": ("genie.demo", "build a small CoinRun dataset and train all three stages on it"),
    "train": ("genie.train", "train one stage: tokenizer, lam, dynamics or lam_dynamics"),
    "play": ("genie.play", "step a trained world with latent actions (window, headless, browser)"),
    "probe": ("genie.probe", "find out what each latent action does"),
    "eval": ("genie.evaluate", "reconstruction, rollout and controllability metrics"),
}


def usage() -> str:
    lines = ["usage: genie <verb> [args]   (genie <verb> --help for its options)", ""]
    lines += [f"  {verb:<7} {text}" for verb, (_, text) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # the command line itself, not a call from Python
        host_memory.reexec_with_huge_pages()
        argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"genie: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(VERBS[verb][0])
    cli.run(module.main, rest, prog=f"genie {verb}")


if __name__ == "__main__":
    main()
