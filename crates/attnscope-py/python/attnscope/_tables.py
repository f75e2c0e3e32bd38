"""Engine tables → pyarrow, with the schema the run directory's Parquet files read back as."""

from __future__ import annotations

from typing import Any, List, Tuple

import pyarrow as pa


def to_arrow(columns: List[Tuple[str, Any]]) -> pa.Table:
    """`[(name, numpy array | ("dict", codes, values))]` from the native module → a pyarrow table.
    Numeric columns are wrapped without a copy; dictionary-encoded strings become plain `string`
    columns, and every field is non-nullable (the engine writes REQUIRED columns), as pyarrow reads them
    from the Parquet files."""
    names, arrays = [], []
    for name, data in columns:
        if isinstance(data, tuple) and data and data[0] == "dict":
            _, codes, values = data
            array = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                                   pa.array(values, pa.string()))
            arrays.append(array.cast(pa.string()))
        else:
            arrays.append(pa.array(data))
        names.append(name)
    schema = pa.schema([pa.field(n, a.type, nullable=False) for n, a in zip(names, arrays)])
    return pa.Table.from_arrays(arrays, schema=schema)
