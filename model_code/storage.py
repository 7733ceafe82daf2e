"""Local paths and `s3://` URIs behind one interface, and atomic writes.

S3 goes through boto3, which reads its endpoint and credentials from the environment
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), so the same code talks to AWS, MinIO or a
test server. Readers get a local copy; writers build the output in a temporary sibling and
move it into place (or upload it whole), so a crash never leaves half a file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

from model_code.errors import DataError

_ZARR_METADATA = (".zgroup", ".zarray", ".zattrs", ".zmetadata", "zarr.json")


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """`s3://bucket/key/part` -> (`bucket`, `key/part`)."""
    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise DataError(f"'{uri}' is not an s3://bucket/key URI")
    return bucket, key.rstrip("/")


def s3_client():
    """A boto3 S3 client configured from the environment."""
    import boto3

    return boto3.client("s3")


def _s3_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike) -> Iterator[Path]:
    """Yield a local path holding `uri`: the path itself, or a temporary download.

    An `s3://` URI that names a prefix (a Zarr store) is downloaded as a directory.
    """
    if not is_s3(uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise DataError("file not found", source=str(uri))
        yield path
        return

    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(str(uri))
    client = s3_client()
    with tempfile.TemporaryDirectory(prefix="auroraops-s3-") as tmp:
        target = Path(tmp) / (Path(key).name or "object")
        try:
            keys = _s3_keys(client, bucket, key)
            if keys:  # a prefix: download the tree below it
                for k in keys:
                    dest = target / k[len(key) + 1:]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    client.download_file(bucket, k, str(dest))
            else:
                client.download_file(bucket, key, str(target))
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NoSuchBucket"):
                raise DataError("object not found", source=str(uri)) from None
            raise DataError(f"cannot read from S3 ({code or e})", source=str(uri)) from None
        except BotoCoreError as e:
            raise DataError(f"cannot read from S3 ({e})", source=str(uri)) from None
        yield target


def upload(local: Path, uri: str) -> None:
    """Upload a file, or a directory tree with its metadata files last.

    Readers of a Zarr store open it through its metadata, so uploading the chunks first
    means nobody sees a store whose metadata points at chunks that are not there yet.
    """
    bucket, key = split_s3(uri)
    client = s3_client()
    if local.is_file():
        client.upload_file(str(local), bucket, key)
        return
    files = sorted(p for p in local.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name in _ZARR_METADATA)
    for path in files:
        client.upload_file(str(path), bucket, f"{key}/{path.relative_to(local).as_posix()}")


def write_atomic(uri: str | os.PathLike, write: Callable[[Path], None]) -> str:
    """Call `write(tmp_path)` and move the result to `uri` only if it succeeded.

    Works for files and directories (Zarr stores), local or `s3://`. Returns `uri` as str.
    """
    name = Path(str(uri)).name
    if is_s3(uri):
        with tempfile.TemporaryDirectory(prefix="auroraops-out-") as tmp:
            path = Path(tmp) / name
            write(path)
            upload(path, str(uri))
        return str(uri)

    target = Path(uri).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        if target.is_dir() and not target.is_symlink():
            # os.replace cannot swap a non-empty directory: move the old one aside first.
            old = target.with_name(f".{name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return str(target)


_CHUNK = 1 << 20


def _chunks(uri: str) -> Iterator[bytes]:
    """The bytes of a file, or of every file under a directory / S3 prefix (name, then content)."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        s3 = s3_client()
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=key + "/") for o in page.get("Contents", [])]
        for k in sorted(keys) or [key]:
            if keys:
                yield k[len(key) + 1:].encode()
            try:
                yield from s3.get_object(Bucket=bucket, Key=k)["Body"].iter_chunks(_CHUNK)
            except s3.exceptions.NoSuchKey:
                raise DataError("object not found", source=uri) from None
        return
    path = Path(uri)
    if not path.exists():
        raise DataError("file not found", source=uri)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            yield f.relative_to(path).as_posix().encode()
        with open(f, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                yield chunk


def content_hash(uri: str) -> str:
    """`sha256:<hex>` of a file, Zarr store or S3 object/prefix, read in 1 MiB chunks."""
    h = hashlib.sha256()
    for chunk in _chunks(str(uri)):
        h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def data_hash(paths: Iterable[str]) -> str:
    """One hash of the contents of `paths`, independent of their names and order."""
    digests = "\n".join(sorted(content_hash(str(p)) for p in paths))
    return f"sha256:{hashlib.sha256(digests.encode()).hexdigest()}"
