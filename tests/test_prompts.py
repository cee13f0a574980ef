"""Prompt files: one parser for `bench --prompts` and phase3's `--prompt-file`, so both accept the same
files and name a bad line the same way (file:line)."""

import pytest

from migrator.bench import run as bench
from migrator.core.errors import ConfigError
from migrator.files.prompts import read_jsonl_prompts, read_prompt_file


def readers():
    """Every way the product reads a JSONL prompt file."""
    return [bench.load_prompts, read_prompt_file, read_jsonl_prompts]


def test_prompt_and_messages_lines_both_become_chat_messages(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "short"}\n\n'
                    '{"messages": [{"role": "system", "content": "ctx"}, {"role": "user", "content": "q?"}]}\n')
    expected = [[{"role": "user", "content": "short"}],
                [{"role": "system", "content": "ctx"}, {"role": "user", "content": "q?"}]]
    for read in readers():
        assert read(path) == expected, read


@pytest.mark.parametrize("bad_line", ['{"prompt": "unterminated', '{"question": "no prompt key"}',
                                      '{"messages": []}', '{"messages": "not a list"}', '{"prompt": 42}', '[1, 2]'])
def test_a_bad_line_is_named_by_file_and_line_by_every_reader(tmp_path, bad_line):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + bad_line + "\n")
    messages = set()
    for read in readers():
        with pytest.raises(ConfigError) as err:
            read(path)
        messages.add(err.value.message)
    assert messages == {f'{path}:3 is not {{"prompt": …}} or {{"messages": […]}}'}


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_a_file_without_prompts_is_refused(tmp_path, text):
    path = tmp_path / "empty.jsonl"
    path.write_text(text)
    for read in readers():
        with pytest.raises(ConfigError, match="has no prompts"):
            read(path)


def test_a_prompt_file_that_is_not_jsonl_is_one_prompt(tmp_path):
    """phase3's --prompt-file also takes a plain text file (the operator's longest prompt, as it is)."""
    path = tmp_path / "longest.txt"
    path.write_text('{"not": "parsed"}\nsecond line\n')
    assert read_prompt_file(path) == [[{"role": "user", "content": '{"not": "parsed"}\nsecond line\n'}]]
    with pytest.raises(ConfigError, match="not found"):
        read_prompt_file(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ConfigError, match="is not UTF-8"):
        read_prompt_file(tmp_path / "latin1.txt")
