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
    """Translate Lance-style S3 storage options to s3fs keyword arguments (Lance's key aliases accepted)."""
    so = {k.lower(): v for k, v in (storage_options or {}).items()}

    def first(*names: str):
        return next((so[n] for n in names if so.get(n)), None)

    out: dict[str, Any] = {}
    key = first("aws_access_key_id", "access_key_id")
    secret = first("aws_secret_access_key", "secret_access_key")
    token = first("aws_session_token", "aws_token", "session_token", "token")
    if key:
        out["key"] = key
    if secret:
        out["secret"] = secret
    if token:
        out["token"] = token
    if str(first("aws_skip_signature", "skip_signature") or "").lower() in ("true", "1", "yes"):
        out["anon"] = True
    endpoint = first("aws_endpoint", "aws_endpoint_url", "endpoint", "endpoint_url")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    region = first("aws_region", "region", "aws_default_region", "default_region")
    if region:
        client_kwargs["region_name"] = region
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    return out


def arrow_filesystem(uri: str, storage_options: dict[str, str] | None = None):
    """(pyarrow filesystem, path within it) for an s3:// URL, or None for anything else. Arrow's S3 client is
    part of pyarrow, already loaded with Lance; s3fs's import alone costs ~1-2 s on a busy 2-core node, which a
    stream's cold start would pay before its first batch."""
    if not uri.startswith(("s3://", "s3a://")):
        return None
    from pyarrow import fs as pafs

    o = fsspec_options(storage_options)
    client = o.get("client_kwargs", {})
    kw: dict[str, Any] = {}
    if o.get("anon"):
        kw["anonymous"] = True
    for ours, theirs in (("key", "access_key"), ("secret", "secret_key"), ("token", "session_token")):
        if o.get(ours):
            kw[theirs] = o[ours]
    if client.get("region_name"):
        kw["region"] = client["region_name"]
    if client.get("endpoint_url"):
        scheme, _, host = client["endpoint_url"].partition("://")
        kw["endpoint_override"], kw["scheme"] = (host, scheme) if host else (scheme, "https")
    return pafs.S3FileSystem(**kw), uri.split("://", 1)[1]


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


def storage_options_from_env(uri: str) -> dict | None:
    """Lance-style S3 options from AWS_* variables, for s3:// lakes."""
    if not uri.startswith("s3://"):
        return None
    env = os.environ
    opts = {
        "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID"),
        "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY"),
        "aws_session_token": env.get("AWS_SESSION_TOKEN"),
        "aws_region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        "aws_endpoint": env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL"),
    }
    opts = {k: v for k, v in opts.items() if v}
    if opts.get("aws_endpoint", "").startswith("http://"):
        opts["allow_http"] = "true"
    return opts or None
