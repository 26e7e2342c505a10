"""The Lance helper process of ``loaders.forks`` (run as a script by ``LanceHelper``; imports lance and pyarrow
only). Reads one JSON request per line on stdin; answers each on stdout with a JSON header line,
``{"nbytes": N}`` then N bytes of an Arrow IPC stream, or ``{"error": "..."}``. Exits when stdin closes."""

import json
import sys

import lance
import pyarrow as pa

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
    if req["op"] == "blobs":
        data = [b.readall() for b in ds.take_blobs(req["column"], ids=req["ids"])]
        return pa.table({"data": pa.array(data, pa.large_binary())})
    raise ValueError(f"unknown request {req['op']!r}")


def main() -> None:
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            table = answer(json.loads(line))
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            buf = sink.getvalue()
            out.write((json.dumps({"nbytes": buf.size}) + "\n").encode())
            out.write(buf)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the asking process, named
            out.write((json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n").encode())
        out.flush()


if __name__ == "__main__":
    main()
