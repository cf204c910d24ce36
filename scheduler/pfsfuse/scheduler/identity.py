"""Whom a pipeline's command runs as.

A worker running as root runs each command as `transform.user`, or, when the spec names none, as
the daemon's pipeline user ($PFS_PIPELINE_USER, `pfs serve --pipeline-user`; default `nobody`):
never as root unless the operator allows it ($PFS_ALLOW_ROOT_COMMANDS=1, `pfs serve
--allow-root-commands`), since a root command can read anything on the machine, the store's files
and its credentials included. A user is a name or a uid, with an optional group name or gid
(`name`, `name:group`, `1000`, `1000:1000`); a name brings its supplementary groups. A worker that
is not root runs commands as itself.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass

from pfsfuse.metadata.errors import InvalidArgument

DEFAULT_USER = "nobody"
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str  # the user's home directory in the password database, "" if none


def check(user: str) -> None:
    """Raise InvalidArgument unless `user` is a well-formed `user[:group]`."""
    name, _, group = user.partition(":")
    if not _USER.fullmatch(name) or (group and not _USER.fullmatch(group)) or user.count(":") > 1:
        raise InvalidArgument(f"transform.user {user!r}: expected a user name or uid, optionally :group or :gid")


def allow_root() -> bool:
    return os.environ.get("PFS_ALLOW_ROOT_COMMANDS") == "1"


def resolve(user: str) -> RunAs | None:
    """Whom to run a command as for `transform.user` (None: as this process, which is not root).
    Raises InvalidArgument for a user or group this machine does not have, or for root when the
    operator does not allow it."""
    if os.geteuid() != 0:
        return None
    spec = user or os.environ.get("PFS_PIPELINE_USER") or DEFAULT_USER
    check(spec)
    name, _, group = spec.partition(":")
    if name.isdigit():
        uid = int(name)
        try:
            pw: pwd.struct_passwd | None = pwd.getpwuid(uid)
        except KeyError:
            pw = None  # a bare uid (as in a container image) needs no entry
    else:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise InvalidArgument(f"transform.user {spec!r}: no user {name!r} on this machine") from None
        uid = pw.pw_uid
    gid = _gid(group, spec) if group else (pw.pw_gid if pw is not None else uid)
    if 0 in (uid, gid) and not allow_root():
        raise InvalidArgument(
            f"transform.user {spec!r}: commands may not run as root here "
            "(the operator allows it with pfs serve --allow-root-commands)"
        )
    groups = tuple(g for g in os.getgrouplist(pw.pw_name, gid) if g != 0 or allow_root()) if pw else ()
    return RunAs(uid, gid, groups, pw.pw_dir if pw is not None else "")


def _gid(group: str, spec: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidArgument(f"transform.user {spec!r}: no group {group!r} on this machine") from None


def can_run(who: RunAs, program: str) -> bool:
    """Whether `who` may execute `program`: search permission on each directory above it (links
    followed) and execute permission on the file, as the kernel checks them."""
    if who.uid == 0:
        return True
    path = os.path.realpath(program)
    parts = path.split("/")
    above = ["/" + "/".join(parts[1:i]) for i in range(1, len(parts))]
    try:
        return all(_may_execute(who, os.stat(p)) for p in [*above, path])
    except OSError:
        return False


def _may_execute(who: RunAs, st: os.stat_result) -> bool:
    """The execute (search) bit of the class of the mode that applies to `who`."""
    if st.st_uid == who.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == who.gid or st.st_gid in who.groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
