"""The `pfs` command line and the admin tools (fsck, bench)."""
