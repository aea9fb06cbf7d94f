"""A small word-level Llama trained from scratch on bAbI train: the project's SLM.

It is the on-device model of the shipped trace table (``train/build_traces.py``; the LLM is
SmolLM2-135M fine-tuned on bAbI train). No model hub is reachable, so it is trained here. It is a
``LlamaForCausalLM`` with a word-level ``PreTrainedTokenizerFast``, saved with
``save_pretrained``: the trace profiler loads it exactly as it would load a real checkpoint.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = {"pad": "[PAD]", "unk": "[UNK]", "bos": "[BOS]", "eos": "[EOS]"}


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Lower-cased word and punctuation tokens seen in ``texts``, plus four special tokens."""
    norm = normalizers.Lowercase()
    pre = pre_tokenizers.Whitespace()
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL.values())}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    # BOS leads every sequence, as in training (train/train_babi_lm.py), so the profiler's
    # ``add_special_tokens=True`` feeds the model what it was trained on
    tok.post_processor = processors.TemplateProcessing(single=f"{SPECIAL['bos']} $A",
                                                       special_tokens=[(SPECIAL["bos"], vocab[SPECIAL["bos"]])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL["pad"],
        unk_token=SPECIAL["unk"],
        bos_token=SPECIAL["bos"],
        eos_token=SPECIAL["eos"],
        padding_side="left",
    )


def build_word_llama(vocab_size: int, hidden_size: int = 128, layers: int = 4, heads: int = 4,
                     intermediate_size: int = 384, max_len: int = 512) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_len,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)
