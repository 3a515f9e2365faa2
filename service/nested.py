"""Nulls inside nested columns (fields of nested models, items of lists).

A frame is stored with every nested field nullable (:func:`relaxed`): a null struct
still has child values, and Parquet refuses a null child under a field declared
non-nullable even where its parent is null itself, so an optional nested model
given as null would not store. What the input model requires is checked instead
on the values (:func:`null_rows`): a null where the model does not allow one, under
a parent that is there, is an error naming the path (``inner.x``, ``items[]``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc


def relaxed(kind: pa.DataType) -> pa.DataType:
    """``kind`` with every nested field and list item nullable."""
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(f.name, relaxed(f.type), True) for f in kind])
    if pa.types.is_list(kind):
        return pa.list_(pa.field(kind.value_field.name, relaxed(kind.value_type), True))
    return kind


def null_rows(
    array: pa.Array, declared: pa.DataType, row_offset: int, limit: int
) -> Iterator[tuple[str, list[int]]]:
    """(path, first row numbers) of each nested place holding a null it must not."""
    rows = pa.array(range(row_offset, row_offset + len(array)), pa.int64())
    yield from _walk(array, declared, rows, "", limit)


def _walk(
    array: pa.Array, declared: pa.DataType, rows: pa.Array, path: str, limit: int
) -> Iterator[tuple[str, list[int]]]:
    if pa.types.is_struct(declared):
        present = array.is_valid()
        for field, child in zip(declared, array.flatten(), strict=True):
            where = f"{path}.{field.name}"
            if not field.nullable:
                yield from _report(where, rows, pc.and_(child.is_null(), present), limit)
            yield from _walk(child, field.type, rows, where, limit)
    elif pa.types.is_list(declared):
        items = array.flatten()
        item_rows = rows.take(pc.list_parent_indices(array))
        where = f"{path}[]"
        if not declared.value_field.nullable:
            yield from _report(where, item_rows, items.is_null(), limit)
        yield from _walk(items, declared.value_type, item_rows, where, limit)


def _report(
    where: str, rows: pa.Array, bad: pa.Array, limit: int
) -> Iterator[tuple[str, list[int]]]:
    if pc.any(bad).as_py():
        found = pc.unique(rows.filter(bad)).to_pylist()
        yield where, found[:limit]
