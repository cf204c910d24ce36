"""The FUSE mount: repos, branches and commits of a store as a directory tree."""
