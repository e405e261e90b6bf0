"""S3 and S3-compatible object stores (s3fs over botocore): endpoint, credentials, failures.

Credentials and endpoint come from the standard AWS variables and config, never from a store
address or a store (``AWS_ENDPOINT_URL`` names an S3-compatible server such as MinIO or moto).
"""

from __future__ import annotations

import os
from typing import Any

from teacher_store.storage.provider import Failure, Provider, first_line

CREDENTIALS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"

# Error codes that mean "these credentials may not do this".
_REFUSED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
}


def endpoint(fs: Any) -> str:
    """Where an s3fs filesystem sends its requests, for messages."""
    kw = getattr(fs, "client_kwargs", None) or {}
    url = kw.get("endpoint_url") or getattr(fs, "endpoint_url", None)
    return str(url or os.environ.get(ENDPOINT_VARIABLE) or "the default endpoint")


def classify(e: BaseException, endpoint: str, bucket: str) -> Failure | None:
    """A botocore exception explained (a request refused or failed, or no answer at all);
    None for any other exception."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(e, BotoCoreError):  # no answer: connection refused, DNS, TLS, timeout
        return (
            f"cannot reach {endpoint} ({first_line(e)})",
            f"check {ENDPOINT_VARIABLE} and the network",
        )
    if not isinstance(e, ClientError):
        return None
    err, meta = e.response.get("Error", {}), e.response.get("ResponseMetadata", {})
    code, status = str(err.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0)
    said = f"{status or code} {err.get('Message') or first_line(e)}".strip()
    if code == "NoSuchBucket":
        return f"bucket {bucket!r} no longer exists at {endpoint}", "create it again"
    if code in _REFUSED or status == 403:
        why = f"{endpoint} refused the request ({said})"
        return why, f"check {CREDENTIALS} and that they may write to bucket {bucket!r}"
    if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
        return f"{endpoint} failed the request ({said})", "wait for the object store"
    return f"{endpoint} answered {said}", f"check bucket {bucket!r} and its settings"


S3 = Provider(
    name="S3",
    protocols=frozenset({"s3", "s3a"}),
    credentials=CREDENTIALS,
    endpoint_variable=ENDPOINT_VARIABLE,
    endpoint=endpoint,
    classify=classify,
)

__all__ = ["CREDENTIALS", "S3", "classify", "endpoint"]
