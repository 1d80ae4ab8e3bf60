"""The deployment's feedback secret file: made once, whole, however many processes
start together and ask for it."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest

from carepost.core.errors import ConfigError
from carepost.delivery.feedback_keys import KEY_FILE, SECRET_BYTES, _secret


def _read_secret(data_dir: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        results.put(_secret(None, Path(data_dir)))
    except ConfigError as error:
        results.put(str(error).encode())


@pytest.mark.parametrize("round_", range(5))
def test_processes_starting_together_all_get_the_one_secret(tmp_path: Path, round_: int):
    context = multiprocessing.get_context("fork")
    count = 12
    start, results = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_read_secret, args=(str(tmp_path), start, results))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    secrets = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join()

    assert len(set(secrets)) == 1 and len(secrets[0]) >= SECRET_BYTES
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no draft left behind
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert _secret(None, tmp_path) == secrets[0]  # and it stays the one


def test_a_damaged_key_file_is_a_clear_error_not_a_new_secret(tmp_path: Path):
    (tmp_path / KEY_FILE).write_text("")
    with pytest.raises(ConfigError, match="must hold at least 32 bytes"):
        _secret(None, tmp_path)
    assert (tmp_path / KEY_FILE).read_text() == ""
