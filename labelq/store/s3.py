"""S3 (or MinIO, or any S3-protocol server) as the object store, through boto3."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labelq.errors import ObjectNotFound, ServiceUnavailable
from labelq.store.base import StoredObject
from labelq.store.keys import check_key, check_prefix

_BLOCK_BYTES = 1 << 20
_TAKEN = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}  # a conditional create lost


class S3Store:
    """Objects live under ``s3://bucket/prefix/``. A PUT is atomic in S3 by design."""

    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
        region: str = "us-east-1", client: Any | None = None, list_page_size: int = 1000,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.list_page_size = list_page_size  # keys per ListObjectsV2 page (S3's maximum is 1,000)
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise ObjectNotFound(f"no object {kwargs.get('Key')!r} in {self.url}") from exc
            raise ServiceUnavailable(f"S3 error {code} on {self.url}", dependency="store") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"S3 unreachable for {self.url}: {type(exc).__name__}", dependency="store") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(self._client.put_object, Bucket=self.bucket, Key=self._full(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """``If-None-Match: *`` (S3 conditional writes; MinIO and moto have them too): the server
        refuses with 412 when the key exists, or 409 while another conditional write of it is in flight."""
        from botocore.exceptions import ClientError

        try:
            self._call(self._client.put_object, Bucket=self.bucket, Key=self._full(key), Body=data, IfNoneMatch="*")
        except ServiceUnavailable as exc:
            cause = exc.__cause__
            code = cause.response.get("Error", {}).get("Code", "") if isinstance(cause, ClientError) else ""
            if code not in _TAKEN:
                raise
            try:  # a retried request whose first try landed finds its own bytes
                return self.get_bytes(key) == data
            except ObjectNotFound:  # 409 and the other write failed: not ours either way
                return False
        return True

    def put_file(self, key: str, path: Path) -> None:
        with path.open("rb") as fh:
            self._call(self._client.put_object, Bucket=self.bucket, Key=self._full(key), Body=fh)

    def get_bytes(self, key: str) -> bytes:
        resp = self._call(self._client.get_object, Bucket=self.bucket, Key=self._full(key))
        body: bytes = resp["Body"].read()
        return body

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                for block in self.open_read(key):
                    fh.write(block)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def open_read(self, key: str) -> Iterator[bytes]:
        resp = self._call(self._client.get_object, Bucket=self.bucket, Key=self._full(key))
        body = resp["Body"]
        try:
            while block := body.read(_BLOCK_BYTES):
                yield block
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._call(self._client.head_object, Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call(self._client.delete_object, Bucket=self.bucket, Key=self._full(key))

    def list_modified(self, prefix: str = "") -> Iterator[StoredObject]:
        """Page by page (a page of keys in memory at a time)."""
        from botocore.exceptions import BotoCoreError, ClientError

        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        pages = self._call(self._client.get_paginator("list_objects_v2").paginate, Bucket=self.bucket, Prefix=full)
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    yield StoredObject(obj["Key"][strip:], obj["LastModified"].timestamp(), int(obj["Size"]))
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"S3 list failed on {self.url}: {type(exc).__name__}", dependency="store") from exc

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[str]:
        """``ListObjectsV2`` page by page (``list_page_size`` keys each; S3 returns keys in order), from
        ``StartAfter`` when given: nothing is held beyond the page being read."""
        check_prefix(prefix)
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{self.prefix}/{prefix}" if self.prefix else prefix,
                                "PaginationConfig": {"PageSize": self.list_page_size}}
        if start_after:
            args["StartAfter"] = f"{self.prefix}/{start_after}" if self.prefix else start_after
        return self._pages(args, len(self.prefix) + 1 if self.prefix else 0)

    def _pages(self, args: dict[str, Any], strip: int) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**args):
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"S3 list failed on {self.url}: {type(exc).__name__}", dependency="store") from exc
