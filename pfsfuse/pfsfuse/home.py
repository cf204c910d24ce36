"""PFS_HOME: where a store lives, and the store's config (storage URL and hash seed).

The config file is as secret as the object store's credentials: it holds the seed that keys the
content hashes. It is readable only by its owner; a client that can read it is trusted to read
chunks straight from the object store.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from pfsfuse.metadata.errors import FailedPrecondition, InvalidArgument

CONFIG_FORMAT = 1


class StoreConfig(msgspec.Struct):
    format: int
    seed: int  # 64-bit key of every content hash in this store
    storage: str  # object store URL: file://, s3://, gs://, az://


class ClientConfig(msgspec.Struct):
    token: str | None = None


class Home:
    def __init__(self, path: str | os.PathLike | None = None):
        raw = path or os.environ.get("PFS_HOME") or "~/.pfs"
        self.path = Path(raw).expanduser().absolute()

    @property
    def socket(self) -> Path:
        return self.path / "pfs.sock"

    @property
    def pidfile(self) -> Path:
        return self.path / "daemon.pid"

    @property
    def log(self) -> Path:
        return self.path / "daemon.log"

    @property
    def index(self) -> Path:
        return self.path / "index"

    @property
    def config_file(self) -> Path:
        return self.path / "store.json"

    @property
    def client_file(self) -> Path:
        """The client's own settings: the token `pfs auth login` keeps."""
        return self.path / "client.json"

    def ensure(self) -> None:
        """Make PFS_HOME, readable by its owner only whatever the umask, also if it existed."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = self.path.stat().st_mode & 0o7777
        if mode != 0o700:
            ours = {"store.json", "client.json", "pfs.sock", "index", "chunks", "daemon.log", "daemon.pid"}
            if any(p.name not in ours for p in self.path.iterdir()):
                raise FailedPrecondition(
                    f"PFS_HOME {self.path} is shared (mode {mode:o}) and holds other files: use a directory of its own"
                )
            os.chmod(self.path, 0o700)
        if len(str(self.socket).encode()) > 107:
            raise InvalidArgument(f"PFS_HOME {self.path} is too long for a unix socket path (at most 95 bytes)")

    def token(self) -> str | None:
        """The token this client logged in with, if any."""
        try:
            data = self.client_file.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return msgspec.json.decode(data, type=ClientConfig).token
        except msgspec.DecodeError:
            raise FailedPrecondition(f"{self.client_file} is damaged: log in again (pfs auth login)") from None

    def save_token(self, token: str | None) -> None:
        """Keep (or, with None, forget) this client's token, in a file only its owner reads."""
        if token is None:
            self.client_file.unlink(missing_ok=True)
            return
        self.ensure()
        tmp = self.client_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(ClientConfig(token)))
        os.replace(tmp, self.client_file)

    def config(self) -> StoreConfig | None:
        try:
            data = self.config_file.read_bytes()
        except FileNotFoundError:
            return None
        cfg = msgspec.json.decode(data, type=StoreConfig)
        if cfg.format != CONFIG_FORMAT:
            raise FailedPrecondition(f"{self.config_file}: unsupported store format {cfg.format}")
        return cfg

    def create_config(self, storage: str | None = None) -> StoreConfig:
        """Make a new store's config; an existing store keeps its own (storage must match)."""
        self.ensure()
        cfg = self.config()
        if cfg is not None:
            if storage and storage != cfg.storage:
                raise FailedPrecondition(f"the store in {self.path} uses {cfg.storage}, not {storage}")
            return cfg
        import secrets  # here only: it loads OpenSSL (through hashlib), which clients need not

        chunks = self.path / "chunks"
        cfg = StoreConfig(CONFIG_FORMAT, secrets.randbits(64), storage or chunks.as_uri())
        tmp = self.config_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(cfg))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.config_file)
        return cfg
