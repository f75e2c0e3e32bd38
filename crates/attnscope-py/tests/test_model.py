"""load, config, tokenize, and the errors bad input gets."""

from __future__ import annotations

import json
import shutil

import pytest

import attnscope
from conftest import FIXTURES, TINY


def test_load_reports_config_device_and_dtype(tiny):
    assert tiny.device == "cpu"
    assert tiny.dtype == "f32"
    cfg = tiny.config
    assert (cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"]) == (4, 8, 4, 512)
    assert "tiny-random-llama" in repr(tiny)


def test_bf16_storage_on_the_cpu_is_reported():
    m = attnscope.load(FIXTURES / "llama_gqa", device="cpu", dtype="bf16")
    assert m.dtype == "f32 (weights bf16)"


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        attnscope.load(tmp_path / "nope")


def test_bad_config_is_a_value_error_naming_the_field(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(FIXTURES / "llama_gqa", model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["num_attention_heads"] = 0
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_attention_heads"):
        attnscope.load(model)


def test_bad_device_and_dtype_are_value_errors():
    with pytest.raises(ValueError, match="device"):
        attnscope.load(TINY, device="tpu")
    with pytest.raises(ValueError, match="--dtype"):
        attnscope.load(TINY, dtype="int8")


def test_tokenize_gives_ids_pieces_and_character_offsets(tiny):
    text = "Once upon a time, héllo wörld"
    tok = tiny.tokenize(text)
    assert len(tok) == len(tok.ids) == len(tok.pieces) == len(tok.offsets)
    assert tok.ids[0] == 1 and tok.offsets[0] == (0, 0)  # the BOS `run` adds
    # Offsets are characters, in order, inside the text; together they cover every non-space character.
    covered = set()
    for start, end in tok.offsets[1:]:
        assert 0 <= start <= end <= len(text)
        covered.update(range(start, end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    word = tok.find("wörld")
    assert word and "".join(tok.span(i) for i in word).strip().endswith("rld")
    # The ids are the ones run() uses for the same text.
    r = tiny.run(text, capture="none")
    assert r.tokens.column("token_id").to_pylist() == tok.ids


def test_tokenize_without_tokenizer_and_empty_text(gqa, tiny):
    with pytest.raises(ValueError, match="tokenizer"):
        gqa.tokenize("hello")
    with pytest.raises(ValueError, match="empty"):
        tiny.tokenize("")


def test_decode_round_trips(tiny):
    tok = tiny.tokenize("The cat sat on the mat")
    assert "cat sat on the mat" in tiny.decode(tok.ids)


def test_threads_are_reported_and_cannot_be_resized_once_running(tiny):
    assert attnscope.threads() >= 1
    tiny.run("warm the pool", capture="none")
    with pytest.raises(ValueError, match="thread pool"):
        attnscope.set_threads(attnscope.threads() + 1)
    with pytest.raises(ValueError, match="at least 1"):
        attnscope.set_threads(0)


def test_a_panic_becomes_attnscope_error():
    with pytest.raises(attnscope.AttnscopeError, match="internal error.*deliberate panic"):
        attnscope._attnscope.panic_for_tests()
    assert issubclass(attnscope.AttnscopeError, Exception)


def test_help_and_stubs_are_there():
    assert "numpy" in attnscope.__doc__
    assert "capture" in attnscope.Model.run.__doc__
    assert attnscope.Run.attention.__doc__
    import importlib.resources as resources
    files = {p.name for p in resources.files("attnscope").iterdir()}
    assert {"_attnscope.pyi", "py.typed"} <= files
