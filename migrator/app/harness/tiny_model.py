"""Build a tiny Qwen2-architecture model that the real vLLM serves, from nothing but a seed.

Random weights (~0.4 M parameters, float32 safetensors), a byte-level BPE tokenizer trained here on a
few English and Korean sentences with ChatML special tokens, and a ChatML chat template. Nothing is
downloaded. Its answers are random text; it exists so that vLLM really loads, schedules, streams and
reports metrics on this CPU.

Qwen3's thinking markers `<think>` and `</think>` are one token each, as in Qwen3's vocabulary, so that vLLM's
`--reasoning-parser qwen3` and its `thinking_token_budget` work on them by token id as they do on the user's
model. They are added after training, into the embedding's padding rows: every other token id, and so every
weight, is what it was without them. They are marked special, unlike Qwen3's, so a server without a reasoning
parser (which skips special tokens) never shows one the random weights happen to pick as content.

    python -m migrator.app.harness.tiny_model OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEED = 1234
HIDDEN = 128
LAYERS = 2
HEADS = 2
KV_HEADS = 1
INTERMEDIATE = 256
MAX_POSITIONS = 2048
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # Qwen3's thinking markers (see the module docstring)

CORPUS = [
    "GraphRAG links entities and relations in a knowledge graph to answer questions with sources.",
    "The backend streams tokens from the language model to the user in real time.",
    "vLLM serves many users at once with continuous batching and paged attention.",
    "Ollama keeps the embedding model loaded while the chat model moves to vLLM.",
    "Hello! How can I help you today? Please summarise the document in three sentences.",
    "The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9.",
    "그래프 기반 검색은 개체와 관계를 연결하여 출처가 있는 답변을 만듭니다.",
    "안녕하세요! 무엇을 도와드릴까요? 문서를 세 문장으로 요약해 주세요.",
    "백엔드는 언어 모델의 토큰을 실시간으로 사용자에게 전달합니다.",
    "동시에 열 명 이상의 사용자가 실시간으로 답변을 받을 수 있어야 합니다.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    trained = tokenizer.get_vocab_size()
    tokenizer.add_special_tokens(THINK_TOKENS)  # ids after the trained ones: no trained id moves
    if (trained + 63) // 64 != (tokenizer.get_vocab_size() + 63) // 64:
        raise AssertionError("the thinking markers must fit in the embedding's padding rows")
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MAX_POSITIONS,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                            "normalized": False, "single_word": False}
            for t in SPECIAL_TOKENS + THINK_TOKENS
        },
    }, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2))
    return tokenizer.get_vocab_size()


def build(out: Path) -> Path:
    """Write the model into `out` (created); deterministic for a given SEED."""
    import numpy as np
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    vocab = build_tokenizer(out)
    vocab_padded = (vocab + 63) // 64 * 64
    head_dim = HIDDEN // HEADS
    rng = np.random.default_rng(SEED)

    def w(*shape: int) -> "np.ndarray":
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    tensors = {"model.embed_tokens.weight": w(vocab_padded, HIDDEN),
               "model.norm.weight": np.ones(HIDDEN, np.float32)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
            p + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
            p + "self_attn.q_proj.weight": w(HEADS * head_dim, HIDDEN),
            p + "self_attn.q_proj.bias": np.zeros(HEADS * head_dim, np.float32),
            p + "self_attn.k_proj.weight": w(KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.k_proj.bias": np.zeros(KV_HEADS * head_dim, np.float32),
            p + "self_attn.v_proj.weight": w(KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.v_proj.bias": np.zeros(KV_HEADS * head_dim, np.float32),
            p + "self_attn.o_proj.weight": w(HIDDEN, HEADS * head_dim),
            p + "mlp.gate_proj.weight": w(INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": w(INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, INTERMEDIATE),
        })
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    eos, pad = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    (out / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": LAYERS,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "vocab_size": vocab_padded,
        "bos_token_id": pad,
        "eos_token_id": eos,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
    }, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": pad, "eos_token_id": [eos], "pad_token_id": pad, "do_sample": False}, indent=2))
    return out


def parameter_count(out: Path) -> int:
    from safetensors.numpy import load_file

    return sum(int(t.size) for t in load_file(str(out / "model.safetensors")).values())


if __name__ == "__main__":
    target = build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen"))
    print(f"{target} ({parameter_count(target):,} parameters)")
