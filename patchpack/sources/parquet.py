"""Parquet files (the Hugging Face datasets layout) and ``datasets`` ``save_to_disk`` Arrow files as sources.

Each row is a :class:`~patchpack.sources.sample.Sample` whose members are the row's columns
(:mod:`~patchpack.sources.columns`: the image from its ``{bytes, path}`` struct or bytes column,
its extension sniffed; every other column by name); the sample index is the row number in the
file, so exact and elastic resume by ``(file, row)`` and sharing a file by row modulo work as
for tar shards.

Rows are read one row group (parquet) or record batch (Arrow) at a time: memory is bounded by
the block's size, and a block over ``4 x max_member_bytes`` uncompressed (1 GiB by default) is
refused, not read (one ``oversize-member`` record for the shard, key = the url). Blocks
before ``start``, or holding no row this reader owns, are skipped unread. A block a column of
which cannot be read gives one ``corrupt`` record per owned row (with its key); a file that
cannot be opened (missing, not parquet, no image column) is one ``shard`` record, as is an I/O
failure part way (after the rows already given). Local paths, ``file:`` urls and remote urls
(:mod:`~patchpack.sources.remote`, seekable with retries) are read.

``datasets``' ``save_to_disk`` folders hold Arrow *stream* files (``data-00000-of-00001.arrow``)
beside ``dataset_info.json`` and ``state.json``; they are told from patchpack's own ``.arrow``
shards (which sit beside a ``manifest.json``) by those files (:func:`is_datasets_arrow`), read
memory-mapped (local only), and a folder given as a source expands to its files
(:func:`datasets_files`).

pyarrow is imported only when a file is read.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple

from ..errors import ErrorKind, ErrorRecord
from .files import open_regular
from .remote import RemoteConfig, RemoteReadError, is_remote, open_remote_file
from .sample import Sample
from .tarscan import DEFAULT_MAX_MEMBER_BYTES
from .wds import local_path

if TYPE_CHECKING:
    import pyarrow as pa

    from .columns import TableLayout
    from .readers import ReadOptions

__all__ = ["read_parquet", "read_datasets_arrow", "parquet_reader", "datasets_arrow_reader", "is_parquet_url",
           "is_datasets_arrow", "datasets_files", "BLOCK_BYTES_FACTOR"]

#: a row group / record batch may hold at most this many times ``max_member_bytes`` uncompressed
BLOCK_BYTES_FACTOR = 4


class _Block(NamedTuple):
    """Rows ``first .. first + rows - 1`` of a file, ``nbytes`` uncompressed, read by ``read(columns)``."""

    first: int
    rows: int
    nbytes: int
    read: Callable[[list[str]], "pa.Table"]
    name: str


def _all(index: int) -> bool:
    return True


def is_parquet_url(url: str) -> bool:
    """Whether ``url`` names a parquet file: it ends in ``.parquet`` (a remote url's query, as in
    ``https://.../train.parquet?download=true``, aside)."""
    return (url.split("?", 1)[0] if is_remote(url) else url).lower().endswith(".parquet")


def is_datasets_arrow(url: str) -> bool:
    """Whether ``url`` is a local ``.arrow`` file of a ``datasets`` ``save_to_disk`` folder (it sits
    beside ``state.json`` and ``dataset_info.json``)."""
    path = local_path(url)
    if path is None or not path.endswith(".arrow"):
        return False
    folder = os.path.dirname(path) or "."
    return os.path.isfile(os.path.join(folder, "state.json")) and \
        os.path.isfile(os.path.join(folder, "dataset_info.json"))


def datasets_files(folder: str) -> list[str] | None:
    """The Arrow files of a ``datasets`` ``save_to_disk`` folder, in order; ``None`` when ``folder``
    is not one.

    Raises:
        ValueError: the folder holds a ``DatasetDict`` (name a split's folder), or its
            ``state.json`` cannot be read (one line).
    """
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        splits = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        raise ValueError(f"{folder} holds a datasets DatasetDict; name one split's folder "
                         f"({', '.join(os.path.join(folder, s) for s in splits[:4])})")
    state = os.path.join(folder, "state.json")
    if not (os.path.isfile(state) and os.path.isfile(os.path.join(folder, "dataset_info.json"))):
        return None
    try:
        with open(state, encoding="utf-8") as fh:
            names = [entry["filename"] for entry in json.load(fh)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{state}: not a datasets state file: {type(exc).__name__}: {exc}") from None
    return [os.path.join(folder, n) for n in names]


def _stem(url: str) -> str:
    name = posixpath.basename(url.split("?", 1)[0].rstrip("/"))
    return name.rsplit(".", 1)[0] if "." in name else name


def _open(url: str, remote: RemoteConfig | None) -> Any:
    if is_remote(url):
        return open_remote_file(url, remote)
    path = local_path(url)
    if path is None:
        raise ValueError(f"{url}: parquet files are read from paths, file: urls or remote urls")
    return open_regular(path)


def _read_columns(block: _Block, columns: list[str]) -> tuple["pa.Table", str]:
    """The block's ``columns`` and, when some cannot be read, a line naming them (the rest read alone)."""
    import pyarrow as pa

    try:
        return block.read(columns), ""
    except (RemoteReadError, FileNotFoundError):  # the file, not a column: the caller's shard record
        raise
    except Exception:
        pass
    readable, failed = {}, []
    for c in columns:
        try:
            readable[c] = block.read([c]).column(0)
        except (RemoteReadError, FileNotFoundError):
            raise
        except Exception as exc:
            failed.append(f"column {c!r} of {block.name} unreadable: {type(exc).__name__}: {exc}")
    return pa.table(readable), "; ".join(failed)


def _read_blocks(blocks: Iterable[_Block], url: str, layout: "TableLayout", start: int, owns: Callable[[int], bool],
                 max_member_bytes: int) -> Iterator[Sample | ErrorRecord]:
    from .columns import block_samples

    limit, stem, done = BLOCK_BYTES_FACTOR * max_member_bytes, _stem(url), 0
    try:
        for block in blocks:
            end = block.first + block.rows
            wanted = [i for i in range(max(block.first, start), end) if owns(i)]
            if block.nbytes > limit and end > start:
                if owns(0):  # one consumer of a shared file reports it
                    yield ErrorRecord(url, url, "source", "oversize-member",
                                      f"{block.name} (rows {block.first}-{end - 1}) holds {block.nbytes:,} bytes "
                                      f"uncompressed, over {BLOCK_BYTES_FACTOR} x max_member_bytes; not read")
            elif wanted:
                table, failed = _read_columns(block, layout.columns)
                yield from block_samples(table, layout, url, stem, block.first, wanted, max_member_bytes, failed)
            done = end
    except Exception as exc:  # the file itself failed part way (I/O, a damaged footer or batch)
        if owns(0):
            yield ErrorRecord(url, url, "source", "shard", f"unreadable after row {done}: {type(exc).__name__}: {exc}")


def _close(source: Any) -> None:
    if source is not None:
        try:
            source.close()
        except Exception:  # closing a broken remote file: nothing more to report
            pass


def _read_file(url: str, start: int, owns: Callable[[int], bool] | None, what: str,
               opened: Callable[[], tuple[Any, "pa.Schema", Iterator[_Block]]], image_column: str | None,
               max_member_bytes: int) -> Iterator[Sample | ErrorRecord]:
    """The samples of a file ``opened()`` gives as ``(source to close, schema, blocks)``."""
    from .columns import table_layout

    owns, source = owns or _all, None
    try:
        source, schema, blocks = opened()
        layout = table_layout(schema, image_column)
    except Exception as exc:  # missing, not this format, no image column, store failure
        _close(source)
        if owns(0):
            yield ErrorRecord(url, url, "source", ErrorKind.UNREADABLE, f"cannot open {what}: {type(exc).__name__}: {exc}")
        return
    try:
        yield from _read_blocks(blocks, url, layout, start, owns, max_member_bytes)
    finally:
        _close(source)


def _parquet_file(url: str, remote: RemoteConfig | None) -> tuple[Any, "pa.Schema", Iterator[_Block]]:
    import pyarrow.parquet as pq

    source = _open(url, remote)
    try:
        pf = pq.ParquetFile(source)
    except BaseException:
        _close(source)
        raise

    def blocks() -> Iterator[_Block]:
        first = 0
        for rg in range(pf.metadata.num_row_groups):
            group = pf.metadata.row_group(rg)
            yield _Block(first, group.num_rows, group.total_byte_size,
                         lambda cols, rg=rg: pf.read_row_group(rg, columns=cols), f"row group {rg}")
            first += group.num_rows

    return source, pf.schema_arrow, blocks()


def _datasets_file(url: str) -> tuple[Any, "pa.Schema", Iterator[_Block]]:
    import pyarrow as pa

    source = pa.memory_map(local_path(url) or url)
    try:
        batches = pa.ipc.open_stream(source)
    except BaseException:
        _close(source)
        raise

    def blocks() -> Iterator[_Block]:
        first = 0
        for i, batch in enumerate(batches):
            table = pa.Table.from_batches([batch])
            yield _Block(first, batch.num_rows, batch.nbytes, lambda cols, t=table: t.select(cols), f"record batch {i}")
            first += batch.num_rows

    return source, batches.schema, blocks()


def read_parquet(url: str, start: int = 0, owns: Callable[[int], bool] | None = None, *,
                 image_column: str | None = None, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
                 remote: RemoteConfig | None = None) -> Iterator[Sample | ErrorRecord]:
    """Samples ``index >= start`` with ``owns(index)`` of the parquet file at ``url`` (module doc);
    ``image_column`` names the image column (default: found, see :mod:`~patchpack.sources.columns`),
    ``remote`` how a remote url is read (default :data:`~patchpack.sources.remote.DEFAULT_REMOTE`)."""
    return _read_file(url, start, owns, "parquet file", lambda: _parquet_file(url, remote), image_column,
                      max_member_bytes)


def read_datasets_arrow(url: str, start: int = 0, owns: Callable[[int], bool] | None = None, *,
                        image_column: str | None = None,
                        max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[Sample | ErrorRecord]:
    """Samples of a local ``datasets`` ``save_to_disk`` Arrow stream file, as :func:`read_parquet`
    gives them; its record batches are the blocks (memory-mapped: skipping one costs nothing)."""
    return _read_file(url, start, owns, "datasets Arrow file", lambda: _datasets_file(url), image_column,
                      max_member_bytes)


def parquet_reader(url: str, start: int, owns: Callable[[int], bool],
                   options: "ReadOptions") -> Iterator[Sample | ErrorRecord]:
    """:func:`read_parquet` as a registered source reader (``*.parquet`` urls)."""
    return read_parquet(url, start, owns, image_column=options.image_column,
                        max_member_bytes=options.max_member_bytes, remote=options.remote)


def datasets_arrow_reader(url: str, start: int, owns: Callable[[int], bool],
                          options: "ReadOptions") -> Iterator[Sample | ErrorRecord]:
    """:func:`read_datasets_arrow` as a registered source reader (:func:`is_datasets_arrow` urls)."""
    return read_datasets_arrow(url, start, owns, image_column=options.image_column,
                               max_member_bytes=options.max_member_bytes)
