"""The RocksDB index: repos, branches, commits, trees and chunk locations (synchronous)."""
