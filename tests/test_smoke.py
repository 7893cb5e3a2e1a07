from __future__ import annotations

import json
from pathlib import Path

from atomicfile import AtomicFile

from conftest import Form, listing


def test_round_trip(tmp_path: Path, form: Form) -> None:
    target = tmp_path / "cfg.json"
    form.write(target, json.dumps({"a": 1}))
    assert json.loads(target.read_text()) == {"a": 1}
    assert listing(tmp_path) == ["cfg.json"]


def test_file_object_is_the_real_thing(tmp_path: Path) -> None:
    import io

    with AtomicFile(tmp_path / "t") as f:
        assert isinstance(f, io.TextIOWrapper)
