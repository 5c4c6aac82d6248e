"""Load a pickled pandas DataFrame without letting the file run code: plain `pickle.load` imports and calls
whatever callables a pickle names (`os.system`, `builtins.eval`, ...), and public releases such as XRec's
tst.pkl are pickles, so this unpickler resolves only the exact pandas / numpy / pyarrow globals a DataFrame
pickle needs and refuses everything else before anything is called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import pandas as pd

from seller_dist import storage
from seller_dist.errors import UserError

# pandas' compatibility unpickler (a pure-Python pickle._Unpickler) maps renamed classes of older pandas
# (Int64Index, old block constructors), so old DataFrame pickles load as pandas.read_pickle loads them.
try:  # pandas >= 1.x keeps it here
    from pandas.compat.pickle_compat import Unpickler as _BaseUnpickler
except ImportError:  # pragma: no cover - a pandas without the compat module
    _BaseUnpickler = pickle._Unpickler  # type: ignore[misc,assignment]

MAX_PICKLE_BYTES = 2 * 1024**3

# (module, name) pairs a DataFrame pickle refers to, across pandas 1.x-3.x and numpy 1.x-2.x.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # the frame, its block manager and blocks
        ("pandas", "DataFrame"),
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.internals.blocks", "new_block"),  # pandas <= 1.3, mapped to _unpickle_block
        # indexes
        ("pandas", "Index"),
        ("pandas", "RangeIndex"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.indexes.numeric", "Int64Index"),  # pandas 1.x, mapped to Index
        ("pandas.core.indexes.numeric", "UInt64Index"),
        ("pandas.core.indexes.numeric", "Float64Index"),
        # string columns (pandas >= 2 string dtype, pyarrow- or python-backed) and missing values
        ("pandas", "StringDtype"),
        ("pandas", "NA"),
        ("pandas.core.arrays.string_", "StringDtype"),
        ("pandas.core.arrays.string_", "StringArray"),
        ("pandas.core.arrays.string_arrow", "ArrowStringArray"),
        ("pandas.arrays", "StringArray"),
        ("pandas.arrays", "ArrowStringArray"),
        ("pandas._libs.missing", "NA"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
        ("pyarrow.lib", "_restore_array"),
        ("pyarrow.lib", "py_buffer"),
        ("pyarrow.lib", "type_for_alias"),
        # numpy arrays, dtypes and scalars (numpy 2 moved numpy.core to numpy._core)
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        # plain builtins that pickle protocol 2/3 use for slices and byte buffers
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("__builtin__", "slice"),
        ("__builtin__", "bytearray"),
        ("_codecs", "encode"),
    }
)


class UnreadablePickleError(UserError, pickle.UnpicklingError):
    """The file is not a readable pickled DataFrame (truncated, garbage, another object)."""


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle refers to something outside the DataFrame allow-list; nothing was called."""


class DataFrameUnpickler(_BaseUnpickler):
    """Resolves only ALLOWED_GLOBALS; `where` names the file in every error."""

    def __init__(self, file: io.BufferedIOBase, where: str):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.where}: refused to unpickle global '{module}.{name}': only the pandas/numpy "
                "globals needed to rebuild a DataFrame are allowed (data_prep/safe_pickle.py). The file is "
                "not a plain DataFrame pickle or it was tampered with; do not load it with pickle.load."
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.where}: refused persistent id {pid!r:.60} (not a DataFrame pickle)")


def _validate_arrow_columns(df: pd.DataFrame, where: str) -> None:
    """Arrow buffers come straight from the file: check offsets/lengths before anything reads them."""
    for col in df.columns:
        arr = df[col].array
        if hasattr(arr, "__arrow_array__"):
            try:
                arr.__arrow_array__().validate(full=True)
            except Exception as e:
                raise UnsafePickleError(f"{where}: column {col!r} holds invalid Arrow data: {e}") from None


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _read_pickle_bytes(url: str, max_bytes: int) -> bytes:
    fs, path = storage.filesystem(url)
    size = fs.size(path)
    if size is not None and size > max_bytes:
        raise UnreadablePickleError(f"{url}: {size} bytes is larger than the {max_bytes}-byte limit")
    data = storage.read_bytes(url)
    if data.startswith(LFS_POINTER):  # a clone without git-lfs holds 130-byte pointers, not the pickles
        raise UnreadablePickleError(
            f"{url}: is a Git LFS pointer, not the pickle: run `git lfs pull` in the clone (or download "
            "the file itself)"
        )
    return data


def loads_table(data: bytes, where: str) -> pd.DataFrame:
    """A pickled table as a DataFrame: a DataFrame, a list of row dicts, or a dict of equal-length
    column lists (what `DataFrame.to_dict("records")` / `to_dict("list")` give and what forks of
    public releases pickle instead). Same allow-list: plain lists and dicts need no globals."""
    try:
        obj = DataFrameUnpickler(io.BytesIO(data), where).load()
    except UnsafePickleError:
        raise
    except Exception as e:
        raise UnreadablePickleError(f"{where}: not a readable pickle: {type(e).__name__}: {e}") from None
    if isinstance(obj, pd.DataFrame):
        _validate_arrow_columns(obj, where)
        return obj
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return pd.DataFrame.from_records(obj) if obj else pd.DataFrame()
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        lengths = {len(v) for v in obj.values()}
        if len(lengths) == 1:
            return pd.DataFrame({str(k): v for k, v in obj.items()})
        raise UnreadablePickleError(f"{where}: a dict of columns of different lengths {sorted(lengths)}")
    raise UnreadablePickleError(
        f"{where}: expected a pickled DataFrame, list of row dicts or dict of column lists, "
        f"got {type(obj).__name__}"
    )


def load_table(url: str, max_bytes: int = MAX_PICKLE_BYTES) -> pd.DataFrame:
    """loads_table for a file at a local path or URL."""
    return loads_table(_read_pickle_bytes(url, max_bytes), url)
