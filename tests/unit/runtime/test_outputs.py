from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cairn.errors import OutputError
from cairn.runtime.outputs import collect_outputs, safe_relative
from cairn.store import ContentStore, open_blob_store


@pytest.fixture
def content(tmp_path: Path) -> ContentStore:
    return ContentStore(open_blob_store(str(tmp_path / "store")))


def _collect(outputs: Path, content: ContentStore):  # noqa: ANN202
    return collect_outputs(outputs, content, project_id="p", execution_id="e", move=True)


def test_every_file_becomes_a_datum_with_its_relative_name(tmp_path: Path,
                                                           content: ContentStore) -> None:
    out = tmp_path / "outputs"
    (out / "plots").mkdir(parents=True)
    (out / "model.pt").write_bytes(b"weights")
    (out / "plots" / "loss.png").write_bytes(b"png")
    result = _collect(out, content)
    assert sorted(d.name for d in result.datums) == ["model.pt", "plots/loss.png"]
    model = next(d for d in result.datums if d.name == "model.pt")
    assert content.read_bytes(model.digest) == b"weights" and model.size == 7
    assert model.execution_id == "e" and model.uri.startswith("datum://")
    assert not result.refused


def test_sidecar_metadata_and_jsonl_attach_tags_and_properties(tmp_path: Path,
                                                              content: ContentStore) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "model.pt").write_bytes(b"w")
    (out / "model.pt.metadata.json").write_text(json.dumps({"cairn.tags": ["best"], "acc": 0.9}))
    (out / "data.csv").write_text("a,b\n")
    (out / "valohai.metadata.jsonl").write_text(
        json.dumps({"file": "data.csv", "metadata": {"valohai.tags": "raw", "rows": 1}}) + "\n")
    result = _collect(out, content)
    by_name = {d.name: d for d in result.datums}
    assert set(by_name) == {"model.pt", "data.csv"}  # sidecars are not outputs themselves
    assert by_name["model.pt"].tags == ("best",) and by_name["model.pt"].metadata == {"acc": 0.9}
    assert by_name["data.csv"].tags == ("raw",) and by_name["data.csv"].metadata == {"rows": 1}


def test_links_leaving_the_outputs_dir_are_refused(tmp_path: Path, content: ContentStore) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not upload")
    os.symlink(secret, out / "leak.txt")
    os.symlink(tmp_path, out / "everything")
    result = _collect(out, content)
    assert result.datums == []
    assert len(result.refused) == 2
    assert all("outside the outputs directory" in r for r in result.refused)


def test_jsonl_entries_naming_parent_paths_are_refused(tmp_path: Path,
                                                       content: ContentStore) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "cairn.metadata.jsonl").write_text(
        json.dumps({"file": "../../etc/passwd", "metadata": {"cairn.tags": ["x"]}}) + "\n")
    result = _collect(out, content)
    assert result.refused == ["cairn.metadata.jsonl:1: file '../../etc/passwd' is outside "
                              "the outputs directory"]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "..", ""])
def test_safe_relative_rejects_escapes(name: str) -> None:
    assert safe_relative(name) is None


def test_sdk_output_path_refuses_escapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cairn

    monkeypatch.setenv("CAIRN_OUTPUTS_DIR", str(tmp_path / "out"))
    assert cairn.outputs.path("sub/model.onnx") == tmp_path / "out" / "sub" / "model.onnx"
    assert (tmp_path / "out" / "sub").is_dir()
    with pytest.raises(OutputError, match="leaves the outputs directory"):
        cairn.outputs.path("../model.onnx")
