"""The S3 gateway (`python -m pfsfuse.s3gateway`) run for a test, and a boto3 client for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
from botocore.config import Config

from helpers import free_port, wait_for


class Gateway:
    def __init__(self, daemon, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(daemon.home).parent / f"s3-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pfsfuse.s3gateway",
                    f"127.0.0.1:{self.port}",
                    "--address",
                    f"unix:{daemon.home}/pfs.sock",
                    *args,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.answers, proc=self.proc, what="the S3 gateway to answer")

    def answers(self) -> bool:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def s3_client(url: str, key: str = "any", secret: str = "any"):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )
