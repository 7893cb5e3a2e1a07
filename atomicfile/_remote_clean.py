"""The remote side of `clean_stale_temps`: abort the incomplete multipart uploads that
killed writers left under an `s3://bucket/prefix`.

The prefix is a directory: `s3://b/team/alice` (or `.../alice/`) means the keys under
`team/alice/`, never `team/alice2/...` nor `team/alice.csv` (nor the key `team/alice`
itself). A raw key prefix is asked for with a final `*`: `s3://b/team/alice*`.

An upload has no lock to show that its writer is alive, so age is the only evidence: an
upload is aborted only when its start (`Initiated`, the server's clock) is older than
`older_than`. Choose a limit longer than any write can take. A bucket lifecycle rule
(`AbortIncompleteMultipartUpload`) does the same on the server's side, without a caller.
"""

from __future__ import annotations

import datetime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from ._log import AnyLogger


def seconds(older_than: float | datetime.timedelta | None) -> float:
    """`older_than` as seconds; a remote sweep must be given one (never a live upload)."""
    if older_than is None:
        raise ValueError(
            "a remote sweep needs older_than (seconds or a timedelta): an upload has no lock "
            "that tells a live writer from a dead one, only its age"
        )
    value = (
        older_than.total_seconds()
        if isinstance(older_than, datetime.timedelta)
        else float(older_than)
    )
    if not value >= 0:
        raise ValueError(f"older_than must be >= 0, not {older_than!r}")
    return value


def stale(
    uploads: Iterable[dict[str, Any]], now: datetime.datetime, older_than: float
) -> list[dict[str, Any]]:
    """The uploads started more than `older_than` seconds before `now` (never one younger,
    nor one started 'in the future' by a skewed clock)."""
    limit = now - datetime.timedelta(seconds=older_than)
    return [u for u in uploads if u["Initiated"] <= limit and u["Initiated"] <= now]


def clean_remote(
    url: str,
    *,
    older_than: float | datetime.timedelta | None,
    dry_run: bool = False,
    logger: AnyLogger | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Abort the incomplete uploads under `url` (`s3://bucket/dir`, or `s3://bucket/prefix*`
    for a raw key prefix) older than `older_than`; return them as
    `s3://bucket/key?uploadId=...`, sorted."""
    limit = seconds(older_than)
    from . import _remote

    raw = url.endswith("*")
    if "*" in url[:-1]:
        raise ValueError(f"a '*' is allowed only at the end of the prefix (a raw key "
                         f"prefix), not in {url!r}")  # fmt: skip
    where = _remote.resolve(url[:-1] if raw else url, None, storage_options, None, True, True)
    if isinstance(where, str) or where.kind != "s3":
        raise ValueError(f"a remote sweep works on s3:// prefixes, not {url!r}")
    fs = where.fs
    bucket, prefix, _ = fs.split_path(where.key)
    # The key comes without its trailing '/'s: a directory gets one back (never its
    # neighbours' keys); a raw prefix keeps what was given ('team/alice/*': the directory).
    if prefix and (not raw or url[:-1].endswith("/")):
        prefix += "/"
    from . import _log

    log = _log.EventLog(logger)

    def call(method: str, **kwargs: Any) -> Any:
        try:
            return fs.call_s3(method, Bucket=bucket, **kwargs)
        except Exception as exc:
            if not _remote.is_store_error(exc):
                raise
            raise _remote.store_error(exc, url) from exc

    uploads: list[dict[str, Any]] = []
    marker: dict[str, str] = {}
    while True:
        page = call("list_multipart_uploads", Prefix=prefix, **marker)
        uploads.extend(page.get("Uploads", []))
        if not page.get("IsTruncated"):
            break
        marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
    now = datetime.datetime.now(datetime.timezone.utc)
    done: list[str] = []
    for upload in stale(uploads, now, limit):
        name = f"s3://{bucket}/{upload['Key']}?uploadId={upload['UploadId']}"
        if not dry_run:
            call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
            if log.debug:
                log.emit(_log.DEBUG, _log.CLEANED, {"temp_path": name, "operation": "cleanup"})
        done.append(name)
    return sorted(done)
