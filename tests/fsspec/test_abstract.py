"""fsspec's own test suite for file systems (copy, get, put, open, pipe) on pfs://."""

from __future__ import annotations

import posixpath

import fsspec.tests.abstract as abstract
import pytest


class PfsFixtures(abstract.AbstractFixtures):
    @pytest.fixture
    def fs(self, pfs):
        return pfs

    @pytest.fixture
    def fs_join(self):
        return posixpath.join

    @pytest.fixture
    def fs_path(self):
        return "data@master"

    @pytest.fixture
    def supports_empty_directories(self):
        return True


class TestPfsCopy(abstract.AbstractCopyTests, PfsFixtures):
    pass


class TestPfsGet(abstract.AbstractGetTests, PfsFixtures):
    pass


class TestPfsPut(abstract.AbstractPutTests, PfsFixtures):
    pass


class TestPfsOpen(abstract.AbstractOpenTests, PfsFixtures):
    pass


class TestPfsPipe(abstract.AbstractPipeTests, PfsFixtures):
    pass
