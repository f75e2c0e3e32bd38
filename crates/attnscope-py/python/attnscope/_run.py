"""`attnscope.Run`: one job's results, in memory (from `Model.run`) or read from a run directory
(`attnscope.open_run`, for directories written by the CLI or by `Run.save`)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Union

import numpy as np
import pyarrow as pa

from ._safetensors import SafetensorsFile
from ._tables import to_arrow

TABLES = ("tokens", "stats", "received", "distance", "steps", "step_groups")


class Run:
    """A job's results. Tables are pyarrow (`.to_pandas()`, `polars.from_arrow(...)`); weights and
    logits are numpy arrays, read-only views of the engine's buffers (or of the mapped file)."""

    def __init__(self) -> None:
        raise TypeError("a Run comes from Model.run or attnscope.open_run")

    @classmethod
    def _from_native(cls, native: Any) -> "Run":
        run = object.__new__(cls)
        run._native, run._dir, run._file = native, None, None
        run._tables: Dict[str, Optional[pa.Table]] = {}
        run.layers: List[int] = list(native.layers)
        run.heads: List[int] = list(native.heads)
        run.inputs: List[Dict[str, Any]] = native.inputs()
        settings = native.settings()
        run.capture: Dict[str, Any] = settings["capture"]
        run.generation: Dict[str, Any] = settings["generation"]
        run.manifest: Optional[Dict[str, Any]] = None
        return run

    @classmethod
    def _from_dir(cls, path: str) -> "Run":
        manifest_path = os.path.join(path, "manifest.json")
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{manifest_path}: not a run directory (no manifest.json)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{manifest_path}: {e}") from None
        run = object.__new__(cls)
        run._native, run._dir, run.manifest = None, path, manifest
        run._tables = {}
        attention = os.path.join(path, "attention.safetensors")
        run._file = SafetensorsFile(attention) if os.path.exists(attention) else None
        capture = manifest.get("capture", {})
        run.capture, run.generation = capture, manifest.get("generation", {})
        run.inputs = manifest.get("inputs", [])
        n_layers = manifest["model"]["architecture"]["n_layers"]
        n_heads = manifest["model"]["architecture"]["n_heads"]
        anything = capture.get("stats") or capture.get("weights")
        run.layers = (capture.get("layers") or list(range(n_layers))) if anything else []
        run.heads = (capture.get("heads") or list(range(n_heads))) if anything else []
        if run._file is not None:
            run.layers, run.heads = run._file.layers_and_heads(0, run.layers, run.heads)
        return run

    def __repr__(self) -> str:
        where = f" from {self._dir!r}" if self._dir else ""
        return (f"attnscope.Run({len(self)} sequences{where}, layers={self.layers}, "
                f"heads={self.heads}, capture={self._capture_kinds()})")

    def __len__(self) -> int:
        return len(self.inputs)

    def _capture_kinds(self) -> str:
        kinds = [k for k in ("stats", "weights") if self.capture.get(k)]
        return "+".join(kinds) or "none"

    def _seq(self, seq: int) -> int:
        if not isinstance(seq, (int, np.integer)) or not 0 <= seq < len(self):
            raise IndexError(f"seq: {seq!r} is out of range (the run has {len(self)} sequences)")
        return int(seq)

    def attention(self, seq: int = 0, layer: Optional[int] = None) -> np.ndarray:
        """Sequence `seq`'s exact post-softmax probabilities `[layers, heads, T, T]`, or one layer's
        `[heads, T, T]` (`layer` is a model layer index). Axis 0 follows `self.layers`, axis 1
        `self.heads`; rows are query slots, zeros where a key is hidden."""
        seq = self._seq(seq)
        if not self.capture.get("weights"):
            raise ValueError("this run captured no weights (run with capture='weights' or 'all')")
        if self._native is not None:
            weights = self._native.attention(seq)
        else:
            weights = self._file.sequence(seq, self.layers)
        if layer is None:
            return weights
        if layer not in self.layers:
            raise ValueError(f"layer: {layer} was not captured (captured layers: {self.layers})")
        return weights[self.layers.index(layer)]

    def logits(self, seq: int = 0) -> np.ndarray:
        """Sequence `seq`'s prompt logits `[rows, vocab]` (f32), when the run asked for them."""
        seq = self._seq(seq)
        out = self._native.logits(seq) if self._native is not None else None
        if out is None:
            raise ValueError("this run kept no logits (run with logits='last' or 'all'; run directories "
                             "do not hold them)")
        return out

    def _table(self, name: str) -> Optional[pa.Table]:
        if name not in self._tables:
            if self._native is not None:
                self._load_native_tables()
            else:
                path = os.path.join(self._dir, f"{name}.parquet")
                if os.path.exists(path):
                    import pyarrow.parquet as pq
                    self._tables[name] = pq.read_table(path)
                else:
                    self._tables[name] = None
        return self._tables.get(name)

    def _load_native_tables(self) -> None:
        tables = self._native.tables()
        tokens = [to_arrow(t) for t in tables.pop("tokens")]
        self._tables["tokens"] = pa.concat_tables(tokens) if tokens else None
        for name in TABLES[1:]:
            self._tables[name] = to_arrow(tables[name]) if name in tables else None

    def _required(self, name: str, why: str) -> pa.Table:
        table = self._table(name)
        if table is None:
            raise ValueError(f"this run has no {name} table ({why})")
        return table

    @property
    def tokens(self) -> pa.Table:
        """One row per slot: seq, slot, token_id, token, position, group, step, kind."""
        return self._required("tokens", "no sequences")

    @property
    def stats(self) -> pa.Table:
        """Per (seq, layer, head, query slot, metric): entropy, max_weight, argmax_slot, sink_mass,
        prev_mass, self_mass, group_mass."""
        return self._required("stats", "run with capture='stats' or 'all'")

    @property
    def received(self) -> pa.Table:
        """Per key slot: received_sum, received_mean, visible_rows."""
        return self._required("received", "run with capture='stats' or 'all'")

    @property
    def distance(self) -> pa.Table:
        """Attention mass by position distance in log2 buckets."""
        return self._required("distance", "run with capture='stats' or 'all'")

    @property
    def steps(self) -> pa.Table:
        """Per generation-step query row: mass on prompt / generated / parallel slots."""
        return self._required("steps", "statistics of a run that generated")

    @property
    def step_groups(self) -> pa.Table:
        """Per generation-step query row: mass on each group."""
        return self._required("step_groups", "statistics of a run that generated")

    def generated_text(self, seq: int = 0) -> Optional[str]:
        """The text sequence `seq` generated (None when it generated nothing or has no tokenizer)."""
        return self.inputs[self._seq(seq)].get("generated_text")

    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> str:
        """Writes the run directory `attnscope run` writes (manifest.json, the Parquet tables,
        attention.safetensors) to `path`, atomically; returns the path. A run opened from a directory is
        copied."""
        path = os.fspath(path)
        if self._native is not None:
            return os.fspath(self._native.save(path, overwrite=overwrite))
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"{path}: exists (pass overwrite=True to replace it)")
            shutil.rmtree(path)
        shutil.copytree(self._dir, path)
        return path


def open_run(path: Union[str, os.PathLike]) -> Run:
    """Reads a run directory (written by `attnscope run` or `Run.save`) into a `Run`; head and layer
    indices come from the tensors' metadata. Weights are memory-mapped, not read."""
    return Run._from_dir(os.fspath(path))
