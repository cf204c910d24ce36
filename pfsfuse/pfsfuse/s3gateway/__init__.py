"""An S3 gateway to the daemon's repos: bucket `BRANCH.REPO` (read-write) or `COMMIT.REPO`
(read-only), for boto3, the AWS CLI, s3fs and anything written for S3.

`make_app(client)` is the Starlette app; `serve(bind, client)` runs it standalone
(`python -m pfsfuse.s3gateway HOST:PORT`); `pfs serve --s3 HOST:PORT` runs it in the daemon.
"""

from pfsfuse.s3gateway.app import caller_token, make_app
from pfsfuse.s3gateway.sigv4 import AcceptAny, Authenticator, StaticCredentials, TokenCredentials

__all__ = [
    "AcceptAny",
    "Authenticator",
    "StaticCredentials",
    "TokenCredentials",
    "caller_token",
    "make_app",
]
