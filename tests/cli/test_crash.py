"""kill -9 of the daemon at random moments during writes never damages the store.

After each kill the daemon restarts on the same PFS_HOME, `pfs fsck` passes and every commit that
was finished before (or by) the interrupted operation reads back byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time

from helpers import PFS, Daemon


def _snapshot(d: Daemon) -> dict[str, dict[str, str]]:
    """commit id -> {path: sha256} for every finished commit of repo r."""
    client = d.client()
    try:
        out = {}
        for c in client.list_commit("r"):
            if c.finished is None:
                continue
            out[c.id] = {
                f.path: hashlib.sha256(b"".join(client.get_file("r", c.id, f.path))).hexdigest()
                for f in client.walk_file("r", c.id)
                if f.type == "file"
            }
        return out
    finally:
        client.close()


def test_kill_9_during_writes_leaves_a_sound_store(tmp_home):
    rng = random.Random(1234)
    d = Daemon(tmp_home / "home").start()
    big = tmp_home / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    tree = tmp_home / "tree"
    tree.mkdir()
    for i in range(400):
        (tree / f"f{i:04d}").write_bytes(os.urandom(rng.randrange(1, 20_000)))
    try:
        d.pfs("create-repo", "r")
        d.pfs("put-file", "r", "master", "seed.txt", input=b"before any crash")
        known = _snapshot(d)
        writes = [
            ["put-file", "r", "master", "big.bin", "-f", str(big)],
            ["put-file", "r", "master", "tree", "-r", "-f", str(tree)],
            ["put-file", "r", "master", "big.bin", "-a", "-f", str(big)],
        ]
        for round_ in range(9):
            args = writes[round_ % len(writes)]
            if round_ % 4 == 3:  # an explicit commit killed around its finish
                d.pfs("start-commit", "r", "master")
                d.pfs("put-file", "r", "master", f"open{round_}", input=b"x" * 1000)
                args = ["finish-commit", "r", "master"]
            client = subprocess.Popen([PFS, *args], env=d.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the crash, not a wait
            d.kill()
            client.wait(timeout=60)
            d.start()
            fsck = d.pfs("fsck", check=False)
            assert fsck.returncode == 0, fsck.stderr.decode()
            now = _snapshot(d)
            for cid, files in known.items():
                assert now.get(cid) == files, f"round {round_}: commit {cid} changed"
            known = now
            client = d.client()
            head = client.inspect_commit("r", "master")
            client.close()
            if head.finished is None:
                d.pfs("finish-commit", "r", "master")
                known = _snapshot(d)
        assert len(known) >= 2
    finally:
        d.stop()
        d.kill()
