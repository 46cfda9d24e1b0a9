"""Integer symbols <-> bytes with constriction's range coder and per-table categorical models.

The writer takes integer values with the id of the table that models each of them; the reader
gets the same ids (the decoder knows them: the channel of each latent, or the scale level its
hyperprior predicted) and returns the values. Symbols are coded table by table, in raster order
within a table, so every table becomes one i.i.d. run that constriction codes in a single call.
Values outside a table's range are coded as an escape symbol, then, after all tables, the
distance to the range in a bypass code (Elias-gamma with uniform models): rare, but lossless.
"""

from __future__ import annotations

import itertools

import numpy as np

from aevision.coding.tables import ProbabilityTables
from aevision.errors import AevisionError

MAX_ESCAPE_BITS = 40  # largest bypass-coded distance: 2^40 (latents are clipped far below this)
_CHUNK = 16  # bits per uniform symbol of the bypass code


def _constriction():  # imported on use: compression is optional for the rest of aevision
    try:
        import constriction
    except ImportError:  # pragma: no cover - a declared dependency
        raise AevisionError("compression needs the 'constriction' package: "
                            "pip install constriction") from None
    return constriction


def _groups(table_ids: np.ndarray, n_tables: int) -> list[tuple[int, np.ndarray]]:
    """(table, positions) for each table that occurs, positions in raster order."""
    ids = np.asarray(table_ids, dtype=np.int64).ravel()
    if len(ids) and (ids.min() < 0 or ids.max() >= n_tables):
        raise ValueError(f"table ids must be in [0, {n_tables}), got {ids.min()}..{ids.max()}")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]]) if len(ids) else []
    bounds = [*list(starts), len(ids)]
    return [(int(sorted_ids[a]), order[a:b]) for a, b in itertools.pairwise(bounds)]


class SymbolWriter:
    """Accumulates symbols; ``getvalue()`` returns the range-coded bytes (a multiple of 4)."""

    def __init__(self) -> None:
        c = _constriction()
        self._stream = c.stream
        self._enc = c.stream.queue.RangeEncoder()
        self.symbols = 0

    def write(self, values: np.ndarray, table_ids: np.ndarray, tables: ProbabilityTables) -> None:
        """Code ``values`` (any shape, integers), each with the table ``table_ids`` names."""
        values = np.asarray(values).astype(np.int64).ravel()
        ids = np.asarray(table_ids).ravel()
        if ids.shape != values.shape:
            raise ValueError(f"{values.shape} values but {ids.shape} table ids")
        escapes: list[np.ndarray] = []
        for t, pos in _groups(ids, len(tables)):
            v = values[pos]
            lo, hi = int(tables.lo[t]), tables.hi(t)
            sym = np.clip(v - lo + 1, 0, hi - lo + 2).astype(np.int32)
            self._enc.encode(sym, self._stream.model.Categorical(tables.probs[t], perfect=False))
            out = (v < lo) | (v > hi)
            if out.any():
                w = v[out]
                escapes.append(np.where(w < lo, lo - 1 - w, w - hi - 1))
        self.symbols += len(values)
        for distance in escapes:
            self._bypass(distance)

    def _bypass(self, distances: np.ndarray) -> None:
        uniform = self._stream.model.Uniform
        for r in distances.tolist():
            m = int(r) + 1
            n = m.bit_length() - 1
            if n > MAX_ESCAPE_BITS:
                raise ValueError(f"latent value too far outside its table (distance {r})")
            self._enc.encode(np.array([n], dtype=np.int32), uniform(MAX_ESCAPE_BITS + 1))
            rest = m - (1 << n)
            while n > 0:
                bits = min(_CHUNK, n)
                n -= bits
                chunk = (rest >> n) & ((1 << bits) - 1)
                self._enc.encode(np.array([chunk], dtype=np.int32), uniform(max(2, 1 << bits)))

    def getvalue(self) -> bytes:
        return self._enc.get_compressed().astype("<u4").tobytes()


class SymbolReader:
    """Reads back what a :class:`SymbolWriter` wrote, given the same table ids and tables."""

    def __init__(self, data: bytes) -> None:
        c = _constriction()
        self._stream = c.stream
        if len(data) % 4:
            raise AevisionError(f"corrupted payload: {len(data)} bytes is not a whole number of words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self._dec = c.stream.queue.RangeDecoder(words)

    def read(self, table_ids: np.ndarray, tables: ProbabilityTables) -> np.ndarray:
        """The values, shaped like ``table_ids``, as int64."""
        shape = np.shape(table_ids)
        ids = np.asarray(table_ids).ravel()
        values = np.empty(len(ids), dtype=np.int64)
        escaped: list[tuple[np.ndarray, np.ndarray, int, int]] = []
        for t, pos in _groups(ids, len(tables)):
            model = self._stream.model.Categorical(tables.probs[t], perfect=False)
            sym = np.asarray(self._dec.decode(model, len(pos)), dtype=np.int64)
            lo, hi = int(tables.lo[t]), tables.hi(t)
            values[pos] = sym + lo - 1
            out = (sym == 0) | (sym == hi - lo + 2)
            if out.any():
                escaped.append((pos[out], sym[out] == 0, lo, hi))
        for pos, below, lo, hi in escaped:
            r = self._bypass(len(pos))
            values[pos] = np.where(below, lo - 1 - r, hi + 1 + r)
        return values.reshape(shape)

    def _bypass(self, count: int) -> np.ndarray:
        uniform = self._stream.model.Uniform
        out = np.empty(count, dtype=np.int64)
        for i in range(count):
            n = int(self._dec.decode(uniform(MAX_ESCAPE_BITS + 1), 1)[0])
            m = 1
            while n > 0:
                bits = min(_CHUNK, n)
                n -= bits
                m = (m << bits) | int(self._dec.decode(uniform(max(2, 1 << bits)), 1)[0])
            out[i] = m - 1
        return out
