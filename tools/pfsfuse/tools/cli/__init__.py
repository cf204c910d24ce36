"""The `pfs` command: pachctl 1.7 verbs over the pfsfuse API."""
