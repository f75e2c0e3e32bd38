"""The tiny random default model (models/tiny-random-llama) with its trained BPE tokenizer, and the reference
token ids of tests/fixtures/tokenizer_cases.json. Part of scripts/make_golden.py (see its docstring)."""

import json

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from golden_common import (
    FIXTURES,
    GPT2_TOKENIZER_DIR,
    MODELS,
    NATIVE_LAYOUT,
    VERSIONS,
    WEIGHT_STD,
    clean_dir,
    fail,
    init_weights,
    seed_for,
)

TRAINING_TEXT = """\
Attention is the part of a transformer that decides, for every token, which earlier tokens matter.
Each head compares a query with the keys of the tokens before it, turns the scores into probabilities
with a softmax, and mixes the values with those weights. Researchers look at these patterns to learn
how a model reads: some heads follow the previous token, some look back at the first token of the
sequence, and some copy a name that appeared a few sentences ago.

The weather in the small town was mild that spring. In the morning the baker opened the shop early,
and the smell of fresh bread drifted down the street. Children walked to school in pairs, talking
about the river, the old bridge, and the dog that always waited by the gate. In the evening people sat
outside, watched the light fade over the hills, and told the same stories they had told for years.

A good test is small, fast, and exact. It should fail loudly when something changes, and it should
explain what it expected and what it found. When two programs must agree to the last bit, the test
records the inputs, the outputs, and the versions of every tool that produced them, so that anyone can
run it again tomorrow and get the very same numbers.

Numbers such as 0, 1, 2, 10, 42, 100, 256, 1024, and 2025 appear in text all the time, as do dates like
March 3rd and times like 10:30. Punctuation matters too: commas, periods, question marks? exclamation
marks! quotes "like these", parentheses (like these), and the occasional semicolon; or colon: here.

The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. Peter Piper picked a
peck of pickled peppers. How much wood would a woodchuck chuck if a woodchuck could chuck wood? These
old sentences are used to test keyboards, fonts, and now tokenizers, because they contain many letters.

When the model generates text, it picks one token at a time. Greedy decoding always takes the most likely
token; sampling draws from the distribution instead. With random weights the output is gibberish, but
the machinery is the same: embed the tokens, run every layer, project to the vocabulary, and choose.
"""

TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing space ",
    "line one\nline two\n\nline four",
    "tabs\tand\ttabs",
    "Numbers: 0 1 2 10 42 1024 2025-03-03",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "emoji \U0001F600\U0001F680 and a family \U0001F468\u200D\U0001F469\u200D\U0001F467",
    "attention heads look back at the first token",
    "",
]


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=1,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    assert tok.token_to_id("<unk>") == 0 and tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    return tok


def make_tiny_model():
    out = MODELS / "tiny-random-llama"
    clean_dir(out)
    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    if vocab != 512:
        fail(f"tokenizer trained to {vocab} tokens, expected 512 (add more training text)")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
    }, indent=2) + "\n")

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         initializer_range=WEIGHT_STD, bos_token_id=1, eos_token_id=2)
    seed = seed_for("tiny-random-llama")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    init_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    (out / "README.md").write_text(
        "# tiny-random-llama\n\n"
        "**Random weights.** This model was never trained: its output is gibberish.\n\n"
        "It exists for smoke tests and as the default model of `attnscope run`, so the CLI works\n"
        "out of the box without downloading anything.\n\n"
        "- architecture: `LlamaForCausalLM`, hidden 64, 4 layers, 8 heads, 4 KV heads (head_dim 8),\n"
        "  intermediate 172, max_position_embeddings 1024, rope_theta 10000, tied embeddings, float32\n"
        f"- config layout: {NATIVE_LAYOUT} (as written by transformers {transformers.__version__})\n"
        "- tokenizer: byte-level BPE, vocab 512 (`<unk>`=0, `<s>`=1, `</s>`=2), trained on a few\n"
        "  paragraphs of English written inline in `scripts/make_golden.py`; its post-processor\n"
        "  prepends `<s>`. bos_token_id 1, eos_token_id 2.\n\n"
        "Regenerate with `scripts/make_golden.py` (see its docstring).\n"
    )
    # sanity: the model loads and runs
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        ref(input_ids=torch.tensor([[1, 50, 60, 70]]))
    return out, tok


def load_gpt2_tokenizer(d):
    """AutoTokenizer on the GPT-2 tokenizer directory, with a documented fallback.

    The copy at /work/shared/tokenizers/gpt2 is not loadable as-is: its merges contain "ĠCla ude" while its
    vocab has no "ĠClaude" (id 40559 holds "ĠLLMProvider" instead), and tokenizers refuses a merge whose
    result is not in the vocab ("Token `ĠClaude` out of vocabulary"; reported as "data did not match any
    variant of untagged enum ModelUntagged" when reading tokenizer.json). The Python binding wraps the Rust
    `tokenizers` crate, which does this check in its BPE builder. If AutoTokenizer fails, build transformers' GPT2Tokenizer from vocab.json + merges.txt
    minus the merges whose result is missing from the vocab. That only changes the encoding of text where
    the dropped merge would fire (here: " Claude"), which no test text contains.
    """
    try:
        return AutoTokenizer.from_pretrained(str(d)), {"gpt2_loaded_via": "AutoTokenizer.from_pretrained"}
    except Exception as e:  # noqa: BLE001
        err = str(e)
    from transformers import GPT2Tokenizer

    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    merges = [m for m in (d / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if m]
    dropped = [m for m in merges if "".join(m.split(" ")) not in vocab]
    kept = [tuple(m.split(" ")) for m in merges if "".join(m.split(" ")) in vocab]
    print(f"warning: AutoTokenizer({d}) failed ({err}); using GPT2Tokenizer(vocab.json, merges.txt) "
          f"without the dangling merges {dropped}")
    tok = GPT2Tokenizer(vocab=vocab, merges=kept)
    if tok("Hello world")["input_ids"] != [15496, 995]:
        fail("fallback GPT-2 tokenizer does not reproduce GPT-2's 'Hello world' -> [15496, 995]")
    for text in TOKENIZER_TEXTS:
        if any("".join(m.split(" ")).replace("\u0120", " ").strip() in text for m in dropped):
            fail(f"test text {text!r} would hit a dropped GPT-2 merge")
    return tok, {
        "gpt2_loaded_via": "GPT2Tokenizer(vocab=vocab.json, merges=merges.txt minus dropped merges)",
        "gpt2_load_error": f"AutoTokenizer.from_pretrained failed: {err}",
        "gpt2_dropped_merges": dropped,
    }


def tokenizer_cases(tiny_dir, raw_tok):
    path = FIXTURES / "tokenizer_cases.json"
    result = {"tiny-random-llama": [], "gpt2": []}
    hf = AutoTokenizer.from_pretrained(str(tiny_dir))
    for text in TOKENIZER_TEXTS:
        ids = hf(text)["input_ids"]
        raw = raw_tok.encode(text).ids
        if ids != raw:
            fail(f"AutoTokenizer({tiny_dir}) disagrees with tokenizer.json for {text!r}: {ids} vs {raw}")
        if not ids or ids[0] != 1:
            fail(f"tiny-random-llama tokenizer did not prepend <s> for {text!r}: {ids}")
        result["tiny-random-llama"].append({"text": text, "ids": ids})
    gpt2_meta = {}
    if GPT2_TOKENIZER_DIR.exists():
        g2, gpt2_meta = load_gpt2_tokenizer(GPT2_TOKENIZER_DIR)
        for text in TOKENIZER_TEXTS:
            result["gpt2"].append({"text": text, "ids": g2(text)["input_ids"]})
    elif path.exists():
        print(f"warning: {GPT2_TOKENIZER_DIR} not found, keeping existing gpt2 tokenizer cases")
        old = json.loads(path.read_text())
        result["gpt2"] = old["gpt2"]
        gpt2_meta = {k: v for k, v in old.get("_meta", {}).items() if k.startswith("gpt2_")}
    else:
        fail(f"{GPT2_TOKENIZER_DIR} not found and no existing tokenizer_cases.json to keep")
    result["_meta"] = {
        "transformers_version": VERSIONS["transformers_version"],
        "tokenizers_version": VERSIONS["tokenizers_version"],
        "note": "ids from AutoTokenizer(...)(text) with add_special_tokens left at its default; "
                f"tiny-random-llama = models/tiny-random-llama, gpt2 = the GPT-2 tokenizer directory "
                f"{GPT2_TOKENIZER_DIR} (not copied into the repository).",
        **gpt2_meta,
    }
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return gpt2_meta
