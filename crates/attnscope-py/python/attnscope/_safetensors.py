"""A run's attention.safetensors, memory-mapped: the header is read, the tensors are views of the file."""

from __future__ import annotations

import json
import re
import struct
from typing import Dict, List, Tuple

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}
NAME = re.compile(r"^seq(\d+)\.layer(\d+)$")


class SafetensorsFile:
    """The tensors `seq{s}.layer{l}` (`[heads, T, T]`) of a run's attention file."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{path}: truncated safetensors header")
            (n,) = struct.unpack("<Q", head)
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: bad safetensors header: {e}") from None
        self.data_start = 8 + n
        self.metadata: Dict[str, str] = header.pop("__metadata__", None) or {}
        self.tensors: Dict[Tuple[int, int], dict] = {}
        for name, info in header.items():
            m = NAME.match(name)
            if m is None or info.get("dtype") not in DTYPES:
                raise ValueError(f"{path}: unexpected tensor {name!r} ({info.get('dtype')})")
            self.tensors[(int(m.group(1)), int(m.group(2)))] = info
        self._map = None

    def layers_and_heads(self, seq: int, layers: List[int], heads: List[int]) -> Tuple[List[int], List[int]]:
        """The layers with a tensor for `seq` and the heads its metadata lists (else the given ones)."""
        present = sorted(l for (s, l) in self.tensors if s == seq)
        if not present:
            return layers, heads
        listed = self.metadata.get(f"seq{seq}.layer{present[0]}.heads")
        return present, json.loads(listed) if listed else heads

    def _mapped(self) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map

    def sequence(self, seq: int, layers: List[int]) -> np.ndarray:
        """`[layers, heads, T, T]` for `seq`: one view of the file when its layers lie back to back (as
        the engine writes them), else stacked."""
        infos = []
        for layer in layers:
            info = self.tensors.get((seq, layer))
            if info is None:
                raise ValueError(f"{self.path}: no tensor seq{seq}.layer{layer}")
            infos.append(info)
        dtype = np.dtype(DTYPES[infos[0]["dtype"]])
        shape = tuple(infos[0]["shape"])
        back_to_back = all(
            i["dtype"] == infos[0]["dtype"] and tuple(i["shape"]) == shape
            and i["data_offsets"][0] == prev["data_offsets"][1]
            for prev, i in zip(infos, infos[1:]))
        raw = self._mapped()
        if back_to_back:
            start = self.data_start + infos[0]["data_offsets"][0]
            end = self.data_start + infos[-1]["data_offsets"][1]
            return raw[start:end].view(dtype).reshape((len(infos),) + shape)
        return np.stack([
            raw[self.data_start + i["data_offsets"][0]:self.data_start + i["data_offsets"][1]]
            .view(DTYPES[i["dtype"]]).reshape(i["shape"]) for i in infos])
