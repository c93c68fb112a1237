"""Shared fixtures: the real names.txt (integration tests) and small files the tests write themselves (unit tests)."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def names_file() -> Path | None:
    """names.txt from $MICROGPT_DATA (what .ci/run sets) or the shared copy beside the repository."""
    for candidate in (os.environ.get("MICROGPT_DATA"), REPO.parent / "shared" / "data" / "names.txt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def names_path() -> Path:
    path = names_file()
    if path is None:
        pytest.skip("names.txt not found: set MICROGPT_DATA to the dataset (docs/protocol.md) to run integration tests")
    return path


@pytest.fixture(scope="session")
def names_data(names_path):
    from microgpt.data import load_dataset

    return load_dataset(names_path)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


TINY_WORDS = ["ab", "ba", "abc", "cab", "bca", "aab", "bba", "cc", "acb", "bac", "ca", "abba", "cabc", "bb", "aca",
              "cbc", "baa", "acca", "bcb", "ccab"]


@pytest.fixture
def tiny_file(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(TINY_WORDS) + "\n")
    return path


@pytest.fixture
def tiny_data(tiny_file):
    from microgpt.data import load_dataset

    return load_dataset(tiny_file)
