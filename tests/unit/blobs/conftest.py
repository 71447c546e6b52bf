from __future__ import annotations

from cairn.testing.s3server import s3_bucket_url, s3_env, s3_server

__all__ = ["s3_bucket_url", "s3_env", "s3_server"]
