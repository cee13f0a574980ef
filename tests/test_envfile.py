"""The lossless .env editor: only the value's bytes change; Compose and python-dotenv agree."""

import io

import pytest
from dotenv import dotenv_values

from migrator.files.envfile import EnvFile, encode_value
from migrator.core.errors import ConfigError

# (original file, key, value, expected file)
CASES = [
    ("LLM_BACKEND=ollama\n", "LLM_BACKEND", "vllm", "LLM_BACKEND=vllm\n"),
    ("A=1\nLLM_BACKEND=ollama  # ollama | vllm\nB=2\n", "LLM_BACKEND", "vllm",
     "A=1\nLLM_BACKEND=vllm  # ollama | vllm\nB=2\n"),
    ("export LLM_BACKEND=ollama\n", "LLM_BACKEND", "vllm", "export LLM_BACKEND=vllm\n"),
    ("LLM_BACKEND='ollama'\n", "LLM_BACKEND", "vllm", "LLM_BACKEND='vllm'\n"),
    ('LLM_BACKEND="ollama" # c\n', "LLM_BACKEND", "vllm", 'LLM_BACKEND="vllm" # c\n'),
    ("A=1\r\nLLM_BACKEND=ollama\r\n\r\n# end\r\n", "LLM_BACKEND", "vllm",
     "A=1\r\nLLM_BACKEND=vllm\r\n\r\n# end\r\n"),
    ("  LLM_BACKEND = ollama\n", "LLM_BACKEND", "vllm", "  LLM_BACKEND = vllm\n"),
    ("# LLM_BACKEND=vllm\nA=1\n", "LLM_BACKEND", "vllm", "# LLM_BACKEND=vllm\nLLM_BACKEND=vllm\nA=1\n"),
    ("A=1", "B", "2", "A=1\nB=2\n"),
    ("A=1\r\n", "B", "2", "A=1\r\nB=2\r\n"),
    ("", "B", "2", "B=2\n"),
    ("K=x\n", "K", "has space", "K='has space'\n"),
    ("K=x\n", "K", "a#b", "K='a#b'\n"),
    ("K=x\n", "K", "cost $5", "K='cost $5'\n"),
    ("K=x\n", "K", "it's", "K=\"it's\"\n"),
    ('K="x"\n', "K", 'say "hi"', 'K="say \\"hi\\""\n'),
    ("K=x\nK=y\n", "K", "z", "K=z\nK=z\n"),
    ('M="line1\nline2"\nK=x\n', "K", "y", 'M="line1\nline2"\nK=y\n'),
    ("K=\n", "K", "v", "K=v\n"),
]


@pytest.mark.parametrize("original, key, value, expected", CASES)
def test_set_changes_only_the_value(original, key, value, expected):
    updated = EnvFile(original).set(key, value)
    assert updated.text == expected
    assert updated.get(key) == value
    parsed = dotenv_values(stream=io.StringIO(updated.text), interpolate=False)
    assert parsed[key] == value  # python-dotenv reads back exactly what was written


def test_unchanged_bytes_round_trip_including_invalid_utf8():
    data = b"A=\xff\xfe\n# caf\xc3\xa9\nB=1\n"
    assert EnvFile.from_bytes(data).to_bytes() == data
    assert EnvFile.from_bytes(data).set("B", "2").to_bytes() == b"A=\xff\xfe\n# caf\xc3\xa9\nB=2\n"


def test_values_without_a_common_form_are_refused():
    with pytest.raises(ConfigError, match="both ' and \\$"):
        encode_value("it's $5")
    with pytest.raises(ConfigError, match="line break"):
        encode_value("a\nb")


def test_unset_removes_only_that_key():
    assert EnvFile("A=1\nB=2 # c\nC=3\n").unset("B").text == "A=1\nC=3\n"


def test_get_reads_quoted_and_commented_values():
    env = EnvFile("A='x y' # c\nB=\"q\\\"z\"\nC=plain # comment\nexport D=d\n")
    assert (env.get("A"), env.get("B"), env.get("C"), env.get("D")) == ("x y", 'q"z', "plain", "d")
    assert env.get("MISSING") is None
