"""The `magnet` command: a thin router that imports a stage only when its command runs.

Each command is ``module:function`` taking ``argv`` (the arguments after the command name)
and returning an exit code; the module builds its own argparse parser. Exit codes: 0 done,
2 bad input (one line naming the input and the fix), 3 teacher unavailable (the run stopped
early, its work left pending), 130 interrupted. Importing a stage
lazily keeps `magnet inspect` fast and lets the core run without torch or vLLM installed.
"""

from __future__ import annotations

import importlib
import sys

from engine.errors import TeacherUnavailable, UserInputError

# command -> (target, one-line help). Nested commands ("graph build") are routed by the target.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("distill.cli:generate_main", "synthesize episodes, trajectories and preference pairs"),
    "graph": ("graph.cli:graph_main", "build / show the function dependency graph"),
    "paths": ("graph.cli:paths_main", "sample signature paths from a graph"),
    "inspect": ("engine.inspect_cmd:main", "counts, sizes and samples of a run directory"),
    "view": ("engine.view.server:main", "serve a local read-only page to look at a run, its reports and the loop"),
    "requeue": ("engine.requeue:main", "make a run's dead-lettered work items pending again (after fixing the teacher)"),
    "export": ("engine.export:main", "export a run as openai | sharegpt | hf | bfcl"),
    "serve-sim": ("engine.sim_server:main", "serve the deterministic simulator as an OpenAI-compatible server"),
    "train": ("train.cli:main", "train sft | mdpo on a run's shards"),
    "improve": ("distill.improve:main", "self-improvement rounds: probe -> target failures -> generate -> train -> serve -> evaluate, resumable"),
    "eval": ("engine.cli:eval_main", "evaluate a model: bfcl (BFCL's own checkers) | paths (held-out, state-checked episodes on any toolkits)"),
    "bench": ("bench.cli:main", "run a benchmark and write bench/results/"),
}


# `magnet eval SUITE ...`: the suite's module parses the rest (a bare `magnet eval --model ...` is BFCL, as before).
EVAL_SUITES = {"bfcl": "bench.bfcl.cli:main", "paths": "distill.eval_paths:main"}


def eval_main(argv: list[str]) -> int:
    suite = "paths" if argv[:1] == ["paths"] else "bfcl"
    module_name, func_name = EVAL_SUITES[suite].split(":")
    return getattr(importlib.import_module(module_name), func_name)(argv[1:] if suite == "paths" else argv)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: magnet COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `magnet COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"magnet: error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except UserInputError as err:
        print(f"magnet {name}: error: {err}", file=sys.stderr)
        return 2
    except TeacherUnavailable as err:  # the circuit breaker stopped the run; the work is pending, not lost
        print(f"magnet {name}: error: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # the environment refused a file operation no command checked for: still one line
        where = f" ({err.filename})" if err.filename else ""
        print(f"magnet {name}: error: {err.strerror or err}{where}; check that path's permissions and free space, "
              "then rerun the same command", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"magnet {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
