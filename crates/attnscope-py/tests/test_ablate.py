"""Model.ablate: the CLI's semantics and numbers, as a pyarrow table."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conftest import TINY, run_cli

PROMPT = "Once upon a time there was a little girl"


def test_ablate_equals_the_cli(tiny, cli, tmp_path):
    out = tmp_path / "abl"
    run_cli(cli, "ablate", "--model", str(TINY), "--device", "cpu", "--prompt", PROMPT, "--slots",
            "2-4", "--ablate-layers", "1,3", "--mode", "mean", "--continuation", "5", "--out", str(out))
    table = tiny.ablate(PROMPT, slots=range(2, 5), layers=[1, 3], mode="mean", continuation=5)
    assert table.equals(pq.read_table(out / "ablation.parquet"))
    summary = json.loads(table.schema.metadata[b"attnscope"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["total_logp_ablated"] == manifest["total_logp_ablated"]
    assert summary["slots"] == [2, 3, 4] and summary["layers"] == [1, 3]
    df = table.to_pandas()
    assert len(df) == 5 and (df.delta == df.logp_ablated - df.logp_base).all()


def test_ablate_with_target_ids_and_a_sequence(tiny):
    ids = tiny.tokenize(PROMPT).ids
    by_text = tiny.ablate(PROMPT, slots=[1], target_ids=[300, 301], mode="zero")
    by_ids = tiny.ablate({"token_ids": ids}, slots=[1], target_ids=[300, 301], mode="zero")
    assert by_text.equals(by_ids)
    replaced = tiny.ablate(ids, slots=[3], mode="replace", replace_with=1, target_ids=[300])
    assert replaced.num_rows == 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(slots=[99]), "slots"),
    (dict(slots=[1], mode="shuffle"), "mode"),
    (dict(slots=[1], mode="replace"), "replace-with"),
    (dict(slots=[1], replace_with=0), "replace-with"),
    (dict(slots=[1], target="x", target_ids=[1]), "target"),
    (dict(slots=[1], target_ids=[100000]), "out of range"),
    (dict(slots=[1], layers=[7]), "layers"),
])
def test_bad_ablations_are_value_errors(tiny, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny.ablate(PROMPT, **kwargs)
