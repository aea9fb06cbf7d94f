"""A tiny Llama built in a test's tmp dir (its next-token logits fixed by hand) and a few bAbI lines: the
shared inputs of tests/test_lm.py and tests/test_spec_decode.py (a helper module, not a test module)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")  # the lm extra: a missing one skips the importing test module
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

VOCAB = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "kitchen", "Kitchen", "garden", "KITCHEN", "hallway", "office",
         "where", "is", "mary", "?", "context", ":", "question", "answer", "(", "only", "one", "word", ")",
         "instruction", "with", ".", "no", "explanation", "moved", "to", "the", "john", "went", "a"]
# next-token logits the tiny model emits at every position: three spellings of "kitchen"
LOGITS = {"kitchen": 2.0, "Kitchen": 1.5, "KITCHEN": 0.5, "garden": 2.2, "hallway": 1.0, "office": 0.2, "[EOS]": -1.0}


def make_tiny_llama(path, next_logits: dict[str, float] | None = None):
    """A Llama whose next-token logits are ``next_logits`` (default LOGITS) at every position, saved with
    save_pretrained."""
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(VOCAB)},
                                                           unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                  bos_token="[BOS]", eos_token="[EOS]", padding_side="left")
    d = 8
    cfg = transformers.LlamaConfig(vocab_size=len(VOCAB), hidden_size=d, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, intermediate_size=16,
                                   max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.model.layers.parameters():
            p.zero_()  # the block adds nothing: the residual stream is the token embedding
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0  # every token embeds to e_0
        model.model.norm.weight.fill_(1.0)
        logits = torch.full((len(VOCAB),), -30.0)
        for w, v in (next_logits or LOGITS).items():
            logits[VOCAB.index(w)] = v
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = logits / math.sqrt(d)  # RMSNorm(e_0) = sqrt(d) e_0
    model.save_pretrained(path)
    hf_tok.save_pretrained(path)


BABI_LINES = ["1 Mary moved to the kitchen.\n", "2 John went to the garden.\n", "3 Where is Mary?\tkitchen\t1\n",
              "4 Mary moved to the office.\n", "5 Where is Mary?\toffice\t4\n",
              "1 John went to the hallway.\n", "2 Where is John?\thallway\t1\n"]
