"""The release of pfsfuse (client and daemon)."""

VERSION = "0.1.0"
