"""The Lance helper process of ``loaders.forks`` (run as a script by ``LanceHelper``; imports lance and pyarrow
only). Reads one JSON request per line on stdin; answers each on stdout with a JSON header line,
``{"nbytes": N}`` then N bytes of an Arrow IPC stream, or ``{"error": "..."}``. Exits when stdin closes."""

import json
import sys


class _NoPandas:
    """Makes pandas look absent: Lance and pyarrow import it when present (~0.5 s of the helper's ~0.9 s start,
    measured at load 9) and only need it to convert to pandas, which nothing here does."""

    def find_spec(self, name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not imported in the Lance helper", name=name)
        return None


sys.meta_path.insert(0, _NoPandas())

import lance  # noqa: E402
import pyarrow as pa  # noqa: E402
from lance.dataset import serialize_row_addrs  # noqa: E402

_datasets: dict = {}


def _dataset(req: dict):
    key = (req["uri"], req["version"], json.dumps(req["storage_options"], sort_keys=True))
    if key not in _datasets:
        _datasets[key] = lance.dataset(req["uri"], version=req["version"], storage_options=req["storage_options"])
    return _datasets[key]


def answer(req: dict) -> pa.Table:
    ds = _dataset(req)
    if req["op"] == "take":
        return ds.take(req["rows"], columns=req["columns"])
    if req["op"] == "scan":  # rows by sorted row address, with _rowaddr, in record batches of batch_size
        return pa.Table.from_batches(ds.scanner(
            columns=req["columns"], row_addr_allowlist=serialize_row_addrs(req["addrs"]), with_row_address=True,
            scan_in_order=True, batch_size=req["batch_size"], io_buffer_size=req["io_buffer_size"]).to_batches())
    if req["op"] == "blobs":
        data = [b.readall() for b in ds.take_blobs(req["column"], ids=req["ids"])]
        return pa.table({"data": pa.array(data, pa.large_binary())})
    raise ValueError(f"unknown request {req['op']!r}")


def _ipc(table: pa.Table, sink) -> None:
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            table = answer(json.loads(line))
            size = pa.MockOutputStream()  # the stream's size first (nothing copied), then the stream itself
            _ipc(table, size)             # straight from Lance's buffers into the pipe (no serialized copy)
            out.write((json.dumps({"nbytes": size.size()}) + "\n").encode())
        except Exception as e:  # noqa: BLE001 - every failure goes back to the asking process, named
            out.write((json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n").encode())
            out.flush()
            continue
        out.flush()
        _ipc(table, pa.PythonFile(out, mode="w"))
        out.flush()


if __name__ == "__main__":
    main()
