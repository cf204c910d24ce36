"""The file engine: repos, branches, commits and files over the RocksDB index and the chunk store.

`core` opens both and holds what every part shares (change notification, staging, locating and
reading chunks); each other module adds one concern to it: `repos` (repos and branches),
`commits`, `writes` (with `sources`, where a put's data comes from) and `reads`. `pfsfuse.store`
composes them, with the maintenance operations that work on the core (fsck, gc, dump), into the
API's in-process implementation.
"""
