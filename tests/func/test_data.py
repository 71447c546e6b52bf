"""Datums, aliases, dataset versions, lineage, gc and verify through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cairn.client import Client
from tests.func.conftest import pid_alive, wait_for

DATA_YAML = """
- step:
    name: make
    image: python:3.11
    command: python make.py {parameters}
    parameters:
      - name: tag
        type: string
        default: a
      - name: version
        type: string
        default: v1
      - name: base
        type: string
        default: ""
- step:
    name: read
    image: python:3.11
    command: find $CAIRN_INPUTS_DIR -type f | sort
    inputs:
      - name: data
- step:
    name: read-flat
    image: python:3.11
    command: find $CAIRN_INPUTS_DIR -type f | sort
    inputs:
      - name: data
        keep-directories: suffix
"""

MAKE = """
import json, os, sys, pathlib
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
out = pathlib.Path(os.environ["CAIRN_OUTPUTS_DIR"])
(out / "train").mkdir()
for i in range(3):
    (out / "train" / f"{i}.txt").write_text(f"{args['tag']}{i}\\n")
(out / "model.bin").write_bytes(args["tag"].encode() * 10)
spec = {"uri": f"dataset://shapes/{args['version']}"}
if args.get("base"):
    spec["from"] = f"dataset://shapes/{args['base']}"
    spec["exclude"] = ["train/0.txt"]
lines = [{"file": f"train/{i}.txt", "metadata": {"cairn.dataset-versions": [spec]}}
         for i in range(3)]
lines.append({"file": "model.bin", "metadata": {"valohai.alias": "latest-model"}})
(out / "cairn.metadata.jsonl").write_text("\\n".join(json.dumps(x) for x in lines) + "\\n")
"""


@pytest.fixture
def data_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "dp"
    root.mkdir()
    (root / "cairn.yaml").write_text(DATA_YAML)
    (root / "make.py").write_text(MAKE)
    monkeypatch.chdir(root)
    return root


def make_folder(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_aliases_move_keep_history_and_resolve_at_creation(data_project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "make", "--tag=a", "-q")[0] == 0
    with Client(data_project) as client:
        first = next(d for d in client.execution(1).outputs if d.name == "model.bin")
        assert client.ctx.store.get_alias(client.ctx.project_id, "latest-model").datum_id \
            == first.id
    code, out, err = cli("run", "read", "--input", "data=datum://latest-model")
    assert code == 0, err
    assert cli("run", "make", "--tag=b", "--version=v2", "-q")[0] == 0  # moves the alias
    with Client(data_project) as client:
        reader = client.execution(2)
        assert reader.inputs[0].datum_id == first.id  # recorded as the concrete datum
        second = next(d for d in client.execution(3).outputs if d.name == "model.bin")
    code, out, _ = cli("data", "alias", "latest-model")
    assert f"datum://{second.id}" in out
    assert out.count("datum://") >= 3  # current target plus two moves in the history
    code, out, _ = cli("data", "alias", "pinned", f"datum://{first.id}")
    assert code == 0 and "datum://pinned" in out
    code, out, _ = cli("data", "aliases")
    assert "datum://pinned" in out and "datum://latest-model" in out
    code, _, err = cli("data", "alias", "broken", "datum://no-such-thing")
    assert code == 4 and "no-such-thing" in err
    code, _, err = cli("data", "alias", "../up", f"datum://{first.id}")
    assert code == 2


def test_data_ls_show_get(data_project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    assert cli("run", "make", "-q")[0] == 0
    code, out, _ = cli("data", "ls", "--name", "train/*", "--format", "json")
    assert sorted(r["name"] for r in json.loads(out)) == ["train/0.txt", "train/1.txt",
                                                          "train/2.txt"]
    code, out, _ = cli("data", "ls", "--min-size", "5", "--format", "json")
    assert [r["name"] for r in json.loads(out)] == ["model.bin"]
    code, out, _ = cli("data", "show", "datum://latest-model")
    assert "model.bin" in out and "#1 make" in out and "blake3:" in out
    code, _, _ = cli("data", "get", "datum://latest-model", str(tmp_path / "m.bin"))
    assert (tmp_path / "m.bin").read_bytes() == b"a" * 10
    (tmp_path / "m.bin").write_bytes(b"mine")
    code, _, err = cli("data", "get", "datum://latest-model", str(tmp_path / "m.bin"))
    assert code == 2 and "m.bin exists" in err and "--force" in err
    assert (tmp_path / "m.bin").read_bytes() == b"mine"
    code, _, _ = cli("data", "get", "datum://latest-model", str(tmp_path / "m.bin"), "--force")
    assert code == 0 and (tmp_path / "m.bin").read_bytes() == b"a" * 10
    code, _, _ = cli("data", "get", "datum://latest-model", str(tmp_path))  # into a folder
    assert code == 0 and (tmp_path / "model.bin").read_bytes() == b"a" * 10


def test_dataset_add_ls_show_diff_checkout(data_project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    folder = make_folder(tmp_path / "imgs", {"train/cat/1.txt": "c1", "train/dog/1.txt": "d1",
                                             "test/cat/2.txt": "c2"})
    code, _, err = cli("dataset", "add", "pets", str(folder))
    assert code == 0, err
    assert "dataset://pets/v1" in err
    (folder / "train" / "dog" / "2.txt").write_text("d2")
    (folder / "test" / "cat" / "2.txt").write_text("c2 changed")
    os.remove(folder / "train" / "cat" / "1.txt")
    assert cli("dataset", "add", "pets", str(folder), "--version", "v2")[0] == 0
    code, _, err = cli("dataset", "add", "pets", str(folder), "--version", "v2")
    assert code == 1 and "already exists" in err

    code, out, _ = cli("dataset", "ls", "--format", "json")
    assert json.loads(out) == [{"dataset": "pets", "versions": 2, "latest": "v2",
                                "files": 3, "size": 14}]
    code, out, _ = cli("dataset", "show", "pets/v2")
    assert "+1 added, -1 removed, ~1 modified, 1 unchanged" in out
    code, out, _ = cli("dataset", "show", "pets/v2", "--files", "2")
    listed = out.split("\n\n", 1)[1].splitlines()  # a table: paths left, sizes right-aligned
    assert listed[1:] == ["test/cat/2.txt   10 B", "train/dog/1.txt   2 B",
                          "… and 1 more (--files N lists more)"]
    code, out, _ = cli("dataset", "diff", "pets/v1", "pets/v2")
    assert "+ train/dog/2.txt" in out and "- train/cat/1.txt" in out
    assert "~ test/cat/2.txt" in out

    dest = tmp_path / "co"
    code, _, err = cli("dataset", "checkout", "pets/v1", str(dest))
    assert code == 0, err
    assert (dest / "train" / "cat" / "1.txt").read_text() == "c1"
    assert not (dest / "train" / "cat" / "1.txt").stat().st_mode & 0o222  # read-only
    code, _, err = cli("dataset", "checkout", "pets/v1", str(dest))
    assert code == 2 and "not empty" in err and "--force" in err
    dest2 = tmp_path / "co2"
    assert cli("dataset", "checkout", "pets/latest", str(dest2), "--glob", "train/**",
               "--writable")[0] == 0
    assert sorted(p.relative_to(dest2).as_posix() for p in dest2.rglob("*.txt")) == \
        ["train/dog/1.txt", "train/dog/2.txt"]
    (dest2 / "train" / "dog" / "1.txt").write_text("edited")  # writable and private
    dest3 = tmp_path / "co3"
    cli("dataset", "checkout", "pets/v1", str(dest3))
    assert (dest3 / "train" / "dog" / "1.txt").read_text() == "d1"


def _cli_without_sqlalchemy(*args: str) -> str:
    """Run the CLI in a fresh interpreter; check that it succeeded without importing
    SQLAlchemy, and return what it wrote on stderr."""
    code = ("import sys; from cairn.cli.main import main; "
            f"code = main({list(args)!r}); print(code, 'sqlalchemy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr
    return done.stderr


def test_dataset_checkout_needs_no_sqlalchemy(data_project: Path, cli,  # noqa: ANN001
                                               tmp_path: Path) -> None:
    """Which tree a version names is read with plain sqlite3 (SQLAlchemy's import costs
    more than linking thousands of files); what that cannot answer goes to the store."""
    folder = make_folder(tmp_path / "imgs", {"a/1.txt": "1", "b/2.txt": "2"})
    assert cli("dataset", "add", "pets", str(folder))[0] == 0
    dest = tmp_path / "co"
    _cli_without_sqlalchemy("dataset", "checkout", "pets/latest", str(dest))
    assert (dest / "b" / "2.txt").read_text() == "2"
    code, _, err = cli("dataset", "checkout", "pets/v7", str(tmp_path / "co2"))
    assert code == 4 and "no dataset version pets/v7" in err and "v1" in err
    code, _, err = cli("dataset", "checkout", "cats/v1", str(tmp_path / "co3"))
    assert code == 4 and "no dataset 'cats'" in err


def test_adding_an_unchanged_folder_again_makes_no_version(data_project: Path, cli,  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", {"a/1.txt": "1", "b/2.txt": "2"})
    assert cli("dataset", "add", "pets", str(folder))[0] == 0
    code, _, err = cli("dataset", "add", "pets", str(folder))
    assert code == 0 and "dataset://pets/v1: unchanged" in err and "no new version" in err
    code, out, _ = cli("dataset", "ls", "--format", "json")
    assert json.loads(out)[0]["versions"] == 1
    code, _, err = cli("dataset", "add", "pets", str(folder), "--version", "named")
    assert code == 0 and "dataset://pets/named: 2 files" in err  # asked for by name
    # Once the files are older than the hash cache's racy window (2 s), a re-add is a
    # stat walk that needs neither a database write nor SQLAlchemy.
    time.sleep(2.1)
    assert "unchanged" in cli("dataset", "add", "pets", str(folder))[2]
    err = _cli_without_sqlalchemy("dataset", "add", "pets", str(folder))
    assert "dataset://pets/named: unchanged" in err
    # A changed folder: a new version, written without SQLAlchemy too.
    (folder / "b" / "3.txt").write_text("3")
    err = _cli_without_sqlalchemy("dataset", "add", "pets", str(folder))
    assert "dataset://pets/v2: 3 files" in err
    code, out, _ = cli("dataset", "show", "pets/v2")
    assert "+1 added, -0 removed, ~0 modified, 2 unchanged" in out and "named" in out
    code, out, _ = cli("dataset", "ls", "--format", "json")
    assert json.loads(out)[0]["versions"] == 3


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_an_interrupted_dataset_add_leaves_nothing_behind(data_project: Path, cli,  # noqa: ANN001
                                                          tmp_path: Path) -> None:
    """Ctrl-C while the files are hashed (by a forked worker, while the command opens the
    database): both processes stop, no version is recorded, no temp file is left."""
    folder = tmp_path / "big"
    folder.mkdir()
    with open(folder / "holes.bin", "wb") as f:
        f.truncate(16 << 30)  # 16 GiB of holes: seconds to hash, no disk space
    an_hour_ago = time.time() - 3600  # old enough to be linked
    os.utime(folder / "holes.bin", (an_hour_ago, an_hour_ago))
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "dataset", "add", "big",
                             str(folder), "--link"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: bool(_children(proc.pid)), what="the hashing worker")
    worker = _children(proc.pid)[0]
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "aborted" in err and "Traceback" not in err
    assert not pid_alive(worker)
    code, out, _ = cli("dataset", "ls", "--format", "json")
    assert code == 0 and json.loads(out) == []
    staging = data_project / ".cairn" / "store" / "tmp"
    assert not staging.exists() or list(staging.iterdir()) == []


@pytest.mark.parametrize("mode", ["forked worker", "one process", "fork refused"])
def test_dataset_add_with_and_without_a_worker_process(
        data_project: Path, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
        mode: str) -> None:
    from cairn.orchestration import overlap

    monkeypatch.setattr(overlap, "can_fork", lambda: mode != "one process")
    if mode == "fork refused":
        def refuse() -> int:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        monkeypatch.setattr(os, "fork", refuse)
    folder = make_folder(tmp_path / "imgs", {"a/1.txt": "one", "b/2.txt": "two"})
    code, _, err = cli("dataset", "add", "pets", str(folder), "--version", "first")
    assert code == 0, err
    assert "dataset://pets/first: 2 files" in err
    code, _, err = cli("dataset", "add", "pets", str(folder), "--version", "first")
    assert code == 1 and "already exists" in err
    (folder / "a" / "1.txt").write_text("changed")
    code, _, err = cli("dataset", "add", "pets", str(folder))
    assert code == 0 and "dataset://pets/v1: 2 files" in err
    code, out, _ = cli("dataset", "show", "pets/v1")
    assert "~1 modified, 1 unchanged" in out and "first" in out


def test_dataset_status_compares_a_folder_with_a_version(data_project: Path, cli,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "imgs", {"a/1.txt": "1", "a/2.txt": "2"})
    assert cli("dataset", "add", "pets", str(folder))[0] == 0
    code, out, _ = cli("dataset", "status", "pets", str(folder), "--exit-code")
    assert code == 0
    assert out == f"dataset://pets/v1 → {folder}: +0 added, -0 removed, ~0 modified, 2 unchanged\n"
    (folder / "a" / "2.txt").write_text("two")
    (folder / "b.txt").write_text("b")
    code, out, _ = cli("dataset", "status", "pets", str(folder), "--exit-code")
    assert code == 1 and out.splitlines()[1:] == ["+ b.txt", "~ a/2.txt"]
    assert cli("dataset", "status", "pets", str(folder))[0] == 0  # without --exit-code
    code, out, _ = cli("dataset", "ls", "--format", "json")
    assert json.loads(out)[0]["versions"] == 1  # nothing was versioned or stored
    code, _, err = cli("dataset", "status", "pets", str(folder), "--version", "v9")
    assert code == 4 and "v9" in err
    code, _, err = cli("dataset", "status", "nope", str(folder))
    assert code == 4 and "nope" in err


@pytest.mark.parametrize("args,needle", [
    (["dataset", "show", "nope/v1"], "nope"),
    (["dataset", "add", "bad/name", "."], "name"),
    (["dataset", "add", "ok", ".", "--version", ".."], ".."),
])
def test_dataset_errors(data_project: Path, cli, args: list[str], needle: str) -> None:  # noqa: ANN001
    code, _, err = cli(*args)
    assert code in (2, 4), err
    assert needle in err


def test_versions_from_step_outputs_and_dataset_inputs(data_project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "make", "--tag=a", "-q")[0] == 0
    assert cli("run", "make", "--tag=b", "--version=v2", "--base=v1", "-q")[0] == 0
    with Client(data_project) as client:
        store, pid = client.ctx.store, client.ctx.project_id
        v1 = store.get_dataset_version(pid, "shapes", "v1")
        v2 = store.get_dataset_version(pid, "shapes", "latest")
        assert v2.version == "v2" and v2.from_version == "v1" and v2.source == "execution"
        assert v1.file_count == 3 and v2.file_count == 3  # 3 new, 0.txt excluded... of base
        assert v2.execution_id == client.execution(2).id
    code, out, err = cli("run", "read", "--input", "data=dataset://shapes/v1")
    assert code == 0, err
    assert "data/train/0.txt" in out  # a whole version keeps its folders
    code, out, err = cli("run", "read-flat", "--input", "data=dataset://shapes/latest/train/*")
    assert code == 0, err
    assert "/data/1.txt" in out and "/data/train/" not in out  # keep-directories: suffix
    with Client(data_project) as client:
        run = client.execution(4)
        assert all(f.uri.startswith("dataset://shapes/v2/") for f in run.inputs)


def test_execution_output_globs_as_inputs(data_project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "make", "-q")[0] == 0
    code, out, err = cli("run", "read", "--input", "data=datum://1/train/*.txt")
    assert code == 0, err
    assert out.count(".txt") == 3
    code, _, err = cli("run", "read", "--input", "data=datum://1/nothing/*")
    assert code == 2 and "no output of #1 matches" in err


def test_lineage_tree_json_dot(data_project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "make", "-q")[0] == 0
    assert cli("run", "read", "--input", "data=dataset://shapes/v1", "-q")[0] == 0
    code, out, _ = cli("lineage", "dataset://shapes/v1")
    assert code == 0
    assert "made by #1 make" in out and "#2 read" in out
    code, out, _ = cli("lineage", "datum://latest-model", "--format", "json")
    data = json.loads(out)
    assert data["upstream"][0]["label"] == "#1 make"
    code, out, _ = cli("lineage", "2", "--format", "dot")
    assert out.startswith("digraph lineage") and "dataset://shapes/v1" in out


def test_gc_keeps_everything_referenced(data_project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    assert cli("run", "make", "-q")[0] == 0
    assert cli("run", "read", "--input", "data=dataset://shapes/v1", "-q")[0] == 0
    make_folder(tmp_path / "f", {"a.txt": "a", "b/c.txt": "c"})
    assert cli("dataset", "add", "f", str(tmp_path / "f"))[0] == 0
    with Client(data_project) as client:
        orphan = client.ctx.content.put_bytes(b"nobody references me")
    code, out, _ = cli("gc", "--dry-run", "--grace", "0s")
    assert "would remove 1 " in out
    code, out, _ = cli("gc", "--grace", "0s")
    assert "removed 1 " in out
    with Client(data_project) as client:
        assert not client.ctx.content.has(orphan)
    # everything still works after gc: re-runs, checkouts, downloads
    assert cli("rerun", "2", "-q")[0] == 0
    assert cli("dataset", "checkout", "f/v1", str(tmp_path / "again"))[0] == 0
    assert cli("run", "read", "--input", "data=datum://latest-model", "-q")[0] == 0
    code, out, _ = cli("gc", "--grace", "0s")
    assert "removed 0 " in out
    # leftovers of a crashed writer in the store's temp folder are swept, old ones only
    tmp = data_project / ".cairn" / "store" / "tmp"
    (tmp / "ingest-crashed").mkdir(parents=True, exist_ok=True)
    (tmp / "ingest-crashed" / "part").write_bytes(b"x" * 100)
    (tmp / ".blob-crashed").write_bytes(b"y")
    old = 1_000_000_000
    for path in (tmp / "ingest-crashed", tmp / ".blob-crashed"):
        os.utime(path, (old, old))
    code, out, _ = cli("gc", "--grace", "1h")
    assert "swept 2 leftover temp files" in out
    assert not (tmp / "ingest-crashed").exists() and not (tmp / ".blob-crashed").exists()


def test_gc_while_an_execution_runs_keeps_its_blobs(data_project: Path, cli) -> None:  # noqa: ANN001
    import subprocess
    import sys

    from tests.func.conftest import wait_for

    (data_project / "cairn.yaml").write_text(DATA_YAML + """
- step:
    name: slow
    image: python:3.11
    command: python -c "import time, os; time.sleep(2); open(os.environ['CAIRN_OUTPUTS_DIR'] + '/late.txt', 'w').write('late')"
""")
    proc = subprocess.run([sys.executable, "-m", "cairn", "run", "slow", "-d"],
                          capture_output=True, text=True, cwd=data_project)
    assert proc.returncode == 0, proc.stderr

    def status() -> str:
        with Client(data_project) as client:
            return client.execution(1).status.value

    wait_for(lambda: status() == "running", what="running")
    code, out, _ = cli("gc", "--grace", "0s")
    assert code == 0
    wait_for(lambda: status() == "complete", what="complete")
    with Client(data_project) as client:
        (late,) = client.execution(1).outputs
        assert client.read_bytes(late) == b"late"
    assert cli("rerun", "1", "-q")[0] == 0  # code snapshot survived
    # a re-run of a step that names its dataset version meets the immutable version
    assert cli("run", "make", "-q")[0] == 0
    code, _, err = cli("rerun", "3")
    assert code == 1 and "already exists" in err


def test_verify_reports_corruption_and_steps_never_get_corrupt_inputs(
        data_project: Path, cli) -> None:  # noqa: ANN001
    assert cli("run", "make", "-q")[0] == 0
    code, out, _ = cli("store", "verify")
    assert code == 0 and "all blobs match" in out
    with Client(data_project) as client:
        model = client.ctx.store.resolve_datum(client.ctx.project_id, "latest-model")
        blob = client.ctx.content.blobs.local_path(model.digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"bit rot")
    code, out, err = cli("store", "verify")
    assert code == 1 and model.digest in out and "model.bin" in out
    code, out, err = cli("run", "read", "--input", "data=datum://latest-model")
    assert code == 1
    assert "model.bin" in err and "corrupt" in err


def test_dataset_add_link_makes_the_folder_read_only_and_catches_edits(
        data_project: Path, cli, tmp_path: Path) -> None:  # noqa: ANN001
    folder = make_folder(tmp_path / "imgs", {"a/1.txt": "one", "b/2.txt": "two"})
    past = os.stat(folder).st_mtime - 3600  # out of the racy window, like a real dataset
    for name in ("a/1.txt", "b/2.txt"):
        os.utime(folder / name, (past, past))
    code, _, err = cli("dataset", "add", "pics", str(folder), "--link")
    assert code == 0, err
    for name in ("a/1.txt", "b/2.txt"):
        st = (folder / name).stat()
        assert not st.st_mode & 0o222 and st.st_nlink == 2  # read-only, shared with the store
    dest = tmp_path / "co"
    assert cli("dataset", "checkout", "pics/v1", str(dest))[0] == 0
    assert (dest / "a" / "1.txt").read_text() == "one"
    os.chmod(folder / "b" / "2.txt", 0o644)
    (folder / "b" / "2.txt").write_text("TWO")  # an edit in place: the stored version too
    code, _, err = cli("dataset", "checkout", "pics/v1", str(tmp_path / "co2"))
    assert code != 0 and "corrupt" in err and "--link" in err
    code, out, _ = cli("store", "verify")
    assert code == 1
