"""Where a lake lives: its root URI, storage options, and the Lance tables under it.

A lake is a folder (local path or ``s3://bucket/prefix``) holding one Lance dataset per table
(``_log.lance``, ``episodes.lance``, ``frames_<sig>.lance``, ...). Lance gets the storage options
as they are; fsspec (s3fs) gets the same credentials translated, for the non-Lance files we read
(LeRobot sources on object storage).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def normalize_uri(uri: str | os.PathLike) -> str:
    """A lake root without trailing slash; local paths made absolute."""
    uri = os.fspath(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if not _is_remote(uri):
        return os.path.abspath(os.path.expanduser(uri))
    return uri.rstrip("/")


@dataclass(frozen=True)
class Store:
    """A lake root plus the options needed to reach it. Pure value; safe to ship to Ray workers."""

    uri: str
    storage_options: dict[str, str] | None = field(default=None, hash=False, compare=False)

    @property
    def remote(self) -> bool:
        return _is_remote(self.uri)

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}.lance"

    def dataset(self, name: str, version: int | str | None = None):
        """Open table ``name`` (at ``version``). Raises FileNotFoundError if it does not exist."""
        import lance

        try:
            return lance.dataset(self.table_uri(name), version=version, storage_options=self.storage_options)
        except (ValueError, OSError) as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                raise FileNotFoundError(f"no table {name!r} at {self.uri}") from e
            raise

    def exists(self, name: str) -> bool:
        try:
            self.dataset(name)
            return True
        except FileNotFoundError:
            return False


def fsspec_options(storage_options: dict[str, str] | None) -> dict[str, Any]:
    """Translate Lance-style S3 storage options to s3fs keyword arguments."""
    so = {k.lower(): v for k, v in (storage_options or {}).items()}
    out: dict[str, Any] = {}
    key = so.get("aws_access_key_id") or so.get("access_key_id")
    secret = so.get("aws_secret_access_key") or so.get("secret_access_key")
    if key:
        out["key"] = key
    if secret:
        out["secret"] = secret
    if so.get("aws_session_token"):
        out["token"] = so["aws_session_token"]
    endpoint = so.get("aws_endpoint") or so.get("endpoint") or so.get("aws_endpoint_url")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = so.get("aws_region") or so.get("region")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    return out


def filesystem(uri: str, storage_options: dict[str, str] | None = None):
    """(fsspec filesystem, path within it) for a local path or URL."""
    import fsspec

    if _is_remote(uri):
        protocol = uri.split("://", 1)[0]
        fs = fsspec.filesystem(protocol, **(fsspec_options(storage_options) if protocol in ("s3", "s3a") else {}))
        return fs, uri.split("://", 1)[1]
    return fsspec.filesystem("file"), normalize_uri(uri)


def schema_with_metadata(schema: pa.Schema, **meta: str) -> pa.Schema:
    return schema.with_metadata({**(schema.metadata or {}), **{k.encode(): v.encode() for k, v in meta.items()}})
