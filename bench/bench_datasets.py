"""Dataset versioning side by side with DVC: add, checkout, re-add, big files, memory.

Same data, same filesystem, temp folders. DVC (pinned in ``bench/_peers.py``) lives in
its own virtualenv, ``.bench-dvc-venv``, created on first use; each DVC run gets a fresh
``dvc init --no-scm`` repository with its own copy of the data (copied outside the
timing) and DVC's default cache type (reflink, else copy). cairn runs the same work
through :mod:`cairn.store.folders` in a fresh process per operation, so both sides are
timed end to end, process start to exit.

cairn adds in two modes, each reported against DVC's default: *copy* (the default: the
store gets its own copy of every file) and *link* (``--link``: files are hardlinked into
the store and made read-only, like DVC's ``hardlink`` cache type, which is run too for
comparison). Each link-mode run gets its own copy of the data, made outside the timing
with the files' old mtimes kept (a link-mode add copies files modified in the last 2 s).

The same work is then run as a user runs it, through the command line (``cairn dataset
add``, ``add --link``, ``checkout``, re-add), each in a project of its own with an empty
store, where a command has run before (the first command of a brand-new project, which
also creates its database, is a row of its own): these rows add the CLI's start, the
metadata database and the version's record. Two floors go beside them:
``cairn --version`` (the CLI start alone) and the kernel's own time to create and write a
copy of every small file (what any add that copies them cannot go below on this machine).

Every operation runs twice and the second (warm page cache) figure is reported.

    .venv/bin/python bench/bench_datasets.py               # (a)–(d), DVC included
    .venv/bin/python bench/bench_datasets.py --million     # plus (e): 1,000,000 tiny files
    .venv/bin/python bench/bench_datasets.py --no-peers    # cairn only
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from types import SimpleNamespace
from pathlib import Path


# -- the cairn side, run as `bench_datasets.py --op ...` in a fresh process -------------
def _op(argv: list[str]) -> int:
    """One cairn operation; prints one JSON line (seconds in-process, peak RSS, facts).

    Such a process loads only what it needs (the harness below is imported after it
    has run), so its time is cairn's, not the benchmark's.
    """
    # --op add|checkout --store S [--src F] [--dest F] [--tree T] [--hash-cache F]
    # [--writable] [--link], parsed by hand: argparse would load shutil and more.
    opts: dict[str, str | bool] = {"writable": False, "link": False, "hash_cache": ""}
    args = iter(argv)
    for arg in args:
        name = arg.removeprefix("--").replace("-", "_")
        opts[name] = True if name in ("writable", "link") else next(args)
    a = SimpleNamespace(**opts)
    t0 = time.perf_counter()
    from cairn.store import ContentStore, open_blob_store
    from cairn.store.folders import checkout, version_folder
    from cairn.store.hashcache import HashCache

    content = ContentStore(open_blob_store(a.store))
    result: dict[str, object] = {}
    if a.op == "add":
        if a.hash_cache:
            with HashCache(a.hash_cache) as cache:
                info = version_folder(a.src, content, hash_cache=cache, link=a.link)
        else:
            info = version_folder(a.src, content, link=a.link)
        result.update(tree=info.tree_digest, files=info.file_count, bytes=info.size)
    else:
        co = checkout(a.tree, a.dest, content, writable=a.writable)
        result.update(files=co.files, bytes=co.bytes, method=co.method)
    result["seconds"] = time.perf_counter() - t0
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The largest helper process of the walk (they run beside the walker).
    result["helper_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__" and "--op" in sys.argv[1:]:
    sys.exit(_op(sys.argv[1:]))

# The harness: what the timed cairn processes above do not load.
import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

ROOT = C.ROOT


def settle() -> None:
    """Write out what earlier runs left dirty, so that no run pays for another's writes.

    cairn syncs its blobs before naming them (``syncfs``, which flushes the whole
    filesystem); DVC does not sync. Without this a cairn run right after a DVC run would
    wait for DVC's data to reach the disk.
    """
    os.sync()


def cairn(*args: str) -> tuple[float, dict]:
    """Run one cairn operation in a new process: (wall seconds, its JSON result)."""
    settle()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"cairn {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


# -- data ------------------------------------------------------------------------------------
def make_small_files(root: Path, count: int, size: int, per_dir: int = 1000) -> None:
    """``count`` random files of ``size`` bytes, ``per_dir`` to a folder (like image sets)."""
    for i in range(count):
        folder = root / f"class{i // per_dir:03d}"
        if i % per_dir == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:07d}.jpg").write_bytes(os.urandom(size))


def make_big_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    block = 64 << 20
    for i in range(count):
        with open(root / f"video{i}.bin", "wb") as fh:
            left = size
            while left:
                n = min(block, left)
                fh.write(os.urandom(n))
                left -= n


# -- the DVC side ----------------------------------------------------------------------------
class Dvc:
    def __init__(self) -> None:
        import _peers

        self.bin = str(_peers.ensure_dvc())
        self.env = _peers.dvc_env()
        self.version = subprocess.run([self.bin, "--version"], capture_output=True,
                                      text=True, env=self.env).stdout.strip()

    def run(self, repo: Path, *args: str) -> float | None:
        """Wall seconds of ``dvc ARGS -q`` in ``repo``; None (and why, on stderr) if it fails."""
        settle()
        try:
            return C.time_command([self.bin, *args, "-q"], cwd=repo, env=self.env)
        except RuntimeError:
            proc = subprocess.run([self.bin, *args, "-v"], cwd=repo, env=self.env,
                                  capture_output=True, text=True)
            print(f"[bench] dvc {' '.join(args)} failed in {repo}:\n{proc.stderr[-3000:]}",
                  file=sys.stderr)
            return None

    def repo(self, parent: Path, name: str, data: Path, *, cache_type: str | None = None
             ) -> Path:
        """A fresh ``dvc init --no-scm`` repository holding a copy of ``data`` as ``data``."""
        repo = parent / name
        repo.mkdir()
        subprocess.run([self.bin, "init", "--no-scm", "-q"], cwd=repo, env=self.env,
                       check=True)
        if cache_type:
            subprocess.run([self.bin, "config", "cache.type", cache_type], cwd=repo,
                           env=self.env, check=True)
        subprocess.run(["cp", "-a", str(data), str(repo / "data")], check=True)
        return repo


def fresh_copy(data: Path, dest: Path) -> Path:
    """A copy of ``data`` with its mtimes kept (outside any timing), for a link-mode add."""
    subprocess.run(["cp", "-a", str(data), str(dest)], check=True)
    return dest


def warm(times: list[float | None]) -> float | None:
    """The figure reported: the second of two runs (page cache warm); None if one failed."""
    return None if not times or None in times else times[-1]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--op"] or "--op" in argv:
        return _op(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=20_000)
    p.add_argument("--file-size", type=int, default=10_000)
    p.add_argument("--big-count", type=int, default=3)
    p.add_argument("--big-size", type=int, default=500_000_000)
    p.add_argument("--million", action="store_true",
                   help="also version 1,000,000 tiny files and report peak memory "
                        "(creating them takes a few minutes)")
    p.add_argument("--million-count", type=int, default=1_000_000)
    p.add_argument("--no-peers", action="store_true", help="skip DVC")
    p.add_argument("--no-big", action="store_true", help="skip the big-file ingest")
    p.add_argument("--tmp", help="folder for the temp data (default: the system's)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = p.parse_args(argv)

    C.compile_trees()
    dvc = None if args.no_peers else Dvc()
    free = shutil.disk_usage(args.tmp or tempfile.gettempdir()).free
    need = 14 * args.files * args.file_size + (
        0 if args.no_big else 5 * args.big_count * args.big_size)
    if free < need * 1.2:
        print(f"[bench] warning: {free / 1e9:.1f} GB free, about {need / 1e9:.1f} GB needed",
              file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="cairn-bench-datasets-", dir=args.tmp))
    rows: list[list[str]] = []
    notes: list[str] = []
    try:
        src = work / "images"
        print(f"[bench] writing {args.files:,} × {args.file_size:,} B files in {work}",
              file=sys.stderr)
        make_small_files(src, args.files, args.file_size)
        small_label = f"{args.files:,} × {args.file_size / 1000:g} KB"

        # (a) add into a fresh store / fresh DVC repository. Nothing is deleted between
        # timed runs: ext4 makes new files slow for a minute after mass deletions.
        dvc_add: list[float | None] = []
        repos: list[Path] = []
        if dvc:
            for i in range(2):
                repo = dvc.repo(work, f"dvc-add-{i}", src)
                repos.append(repo)
                dvc_add.append(dvc.run(repo, "add", "data"))
        dvc_add_hl: list[float | None] = []
        if dvc:
            for i in range(2):
                repo = dvc.repo(work, f"dvc-add-hl-{i}", src, cache_type="hardlink")
                dvc_add_hl.append(dvc.run(repo, "add", "data"))
        link_srcs = [fresh_copy(src, work / f"images-link-{i}") for i in range(2)]
        cairn_add = []
        tree = ""
        for i in range(2):
            wall, res = cairn("--op", "add", "--store", str(work / f"store-{i}"),
                              "--src", str(src))
            cairn_add.append(wall)
            tree = str(res["tree"])
        store = work / "store-1"
        cairn_link = []
        for i in range(2):
            wall, res = cairn("--op", "add", "--store", str(work / f"store-link-{i}"),
                              "--src", str(link_srcs[i]), "--link")
            cairn_link.append(wall)
            assert res["tree"] == tree, "link mode stored another tree"
        rows.append(_row(f"add {small_label} (fresh store), cairn copy", dvc_add, cairn_add))
        rows.append(_row(f"add {small_label} (fresh store), cairn --link", dvc_add,
                         cairn_link))
        if dvc:
            rows.append(_row("  the same, DVC cache.type=hardlink vs cairn --link",
                             dvc_add_hl, cairn_link))

        # (b) checkout into a fresh folder.
        dvc_co: list[float | None] = []
        if dvc:
            repo = repos[-1]
            for i in range(2):
                os.rename(repo / "data", repo / f"data-moved-{i}")  # outside the timing
                dvc_co.append(dvc.run(repo, "checkout"))
        co_ro, co_rw = [], []
        method = {}
        for i in range(2):
            wall, method = cairn("--op", "checkout", "--store", str(store), "--tree", tree,
                                 "--dest", str(work / f"co-ro-{i}"))
            co_ro.append(wall)
        rows.append(_row(f"checkout {small_label}, cairn read-only ({method['method']})",
                         dvc_co, co_ro))
        for i in range(2):
            wall, method = cairn("--op", "checkout", "--store", str(store), "--tree", tree,
                                 "--dest", str(work / f"co-rw-{i}"), "--writable")
            co_rw.append(wall)
        rows.append(_row(f"checkout {small_label}, cairn writable ({method['method']})",
                         dvc_co, co_rw))

        # (c) re-add, nothing changed.
        dvc_re: list[float | None] = []
        if dvc:
            for _ in range(2):
                dvc_re.append(dvc.run(repos[-1], "add", "data"))
        dvc_st = [dvc.run(repos[-1], "status") for _ in range(2)] if dvc else []
        cache = work / "hashes.db"
        cairn("--op", "add", "--store", str(store), "--src", str(src), "--hash-cache",
              str(cache))  # fills the hash cache
        cairn_re = []
        for _ in range(2):
            cairn_re.append(cairn("--op", "add", "--store", str(store), "--src", str(src),
                                  "--hash-cache", str(cache))[0])
        rows.append(_row(f"re-add {small_label} unchanged", dvc_re, cairn_re))

        # (f) the same through the command line, as a user runs it: `cairn dataset add`
        # and `checkout` also start the CLI, open the metadata database (SQLAlchemy) and
        # record the version; each run in a project of its own (its own store and hash
        # cache), used before: its database exists. The first command of a brand-new
        # project also creates the database; that is timed on a row of its own.
        cli_add, cli_link, cli_new, cli_re, cli_co, cli_st = [], [], [], [], [], []
        for i in range(2):
            cli_add.append(cli(_cli_project(work / f"cli-{i}"), "dataset", "add", "imgs",
                               str(src)))
        for i in range(2):
            copy = fresh_copy(src, work / f"images-cli-link-{i}")
            cli_link.append(cli(_cli_project(work / f"cli-link-{i}"), "dataset", "add",
                                "imgs", str(copy), "--link"))
        for i in range(2):
            copy = fresh_copy(src, work / f"images-cli-new-{i}")
            cli_new.append(cli(_cli_project(work / f"cli-new-{i}", used=False), "dataset",
                               "add", "imgs", str(copy), "--link"))
        proj = work / "cli-1"
        for _ in range(2):
            cli_re.append(cli(proj, "dataset", "add", "imgs", str(src)))
        for _ in range(2):
            cli_st.append(cli(proj, "dataset", "status", "imgs", str(src)))
        for i in range(2):
            cli_co.append(cli(proj, "dataset", "checkout", "imgs/v1",
                              str(work / f"cli-co-{i}")))
        rows.append(_row(f"`cairn dataset add` {small_label}, copy", dvc_add, cli_add))
        rows.append(_row(f"`cairn dataset add --link` {small_label}", dvc_add, cli_link))
        if dvc:
            rows.append(_row("  the same, DVC cache.type=hardlink", dvc_add_hl, cli_link))
        rows.append(_row("  the same, as the first command of a new project", dvc_add,
                         cli_new))
        rows.append(_row("`cairn dataset checkout` (read-only, hardlinks)", dvc_co, cli_co))
        rows.append(_row("`cairn dataset add` again, unchanged", dvc_re, cli_re))
        rows.append(_row("`cairn dataset status`, unchanged, vs `dvc status`", dvc_st, cli_st))
        startup = min(cli(proj, "--version") for _ in range(3))
        rows.append(["  `cairn --version` (CLI start alone)", "", C.fmt_seconds(startup), ""])
        floor = _create_floor(work / "floor", src)
        rows.append([f"  floor: create + write {small_label} files (1 thread, no hashing, "
                     "no sync)", "", C.fmt_seconds(floor), ""])

        # (d) a few big files, against a plain read of the same files.
        if not args.no_big:
            big = work / "videos"
            gb = args.big_count * args.big_size / 1e9
            print(f"[bench] writing {args.big_count} × {args.big_size / 1e6:g} MB files",
                  file=sys.stderr)
            make_big_files(big, args.big_count, args.big_size)
            settle()
            reads = [C.time_command(["sh", "-c", f"cat {big}/* > /dev/null"])
                     for _ in range(2)]
            dvc_big: list[float | None] = []
            if dvc:
                for i in range(2):
                    repo = dvc.repo(work, f"dvc-big-{i}", big)
                    dvc_big.append(dvc.run(repo, "add", "data"))
                    shutil.rmtree(repo)  # bounded disk use: a repository holds 2 copies
            cairn_big = []
            for i in range(2):
                cairn_big.append(cairn("--op", "add", "--store", str(work / "store-big"),
                                       "--src", str(big))[0])
                shutil.rmtree(work / "store-big")
            cairn_big_link = []
            for i in range(2):
                copy = fresh_copy(big, work / "videos-link")
                settle()
                cairn_big_link.append(cairn("--op", "add", "--store",
                                            str(work / "store-big-link"), "--src", str(copy),
                                            "--link")[0])
                shutil.rmtree(work / "store-big-link")
                shutil.rmtree(copy)
            label = f"add {args.big_count} × {args.big_size / 1e6:g} MB"
            rows.append(_row(f"{label}, cairn copy", dvc_big, cairn_big))
            rows.append([f"  {label}, cairn copy: throughput", _rate(gb, dvc_big),
                         _rate(gb, cairn_big), ""])
            rows.append(_row(f"{label}, cairn --link", dvc_big, cairn_big_link))
            rows.append([f"  {label}, cairn --link: throughput", _rate(gb, dvc_big),
                         _rate(gb, cairn_big_link), ""])
            read = reads[-1]
            rows.append([f"  plain read (cat > /dev/null): {C.fmt_seconds(read)}, "
                         f"{gb / read:.2f} GB/s", "",
                         f"copy {cairn_big[-1] / read:.1f}×, link "
                         f"{cairn_big_link[-1] / read:.1f}× the read", ""])

        # (e) memory while versioning a million tiny files.
        if args.million:
            many = work / "million"
            n = args.million_count
            print(f"[bench] writing {n:,} tiny files (takes a while)", file=sys.stderr)
            t0 = time.perf_counter()
            make_small_files(many, n, 64, per_dir=1000)
            print(f"[bench] … written in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            wall, res = cairn("--op", "add", "--store", str(work / "store-million"),
                              "--src", str(many))
            rows.append([f"version {n:,} × 64 B files: time", "—", C.fmt_seconds(wall), ""])
            rows.append([f"version {n:,} × 64 B files: peak RSS, walker + largest helper",
                         "—", f"{int(res['maxrss_kb']) / 1024:.0f} + "
                         f"{int(res['helper_maxrss_kb']) / 1024:.0f} MiB", ""])
    finally:
        if args.keep:
            print(f"[bench] kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    notes.append(C.machine_line())
    notes.append(f"filesystem: {_fs_type(work.parent)}; "
                 + (f"DVC {dvc.version}, default cache type (reflink, else copy)" if dvc
                    else "DVC not run (--no-peers)"))
    notes.append("each figure is the second of two runs (warm page cache), process start "
                 "to exit for both tools, after a `sync` so no run pays for another's "
                 "writeback; ratio = DVC time / cairn time")
    notes.append("cairn copy mode stores copies (reflink where the filesystem can) and "
                 "syncs blobs before naming them; --link hardlinks the (old, "
                 "non-executable) files into the store and makes them read-only, after one "
                 "syncfs; read-only checkouts are hardlinks, DVC's are copies")
    C.print_table("dataset versioning: DVC vs cairn", rows, notes,
                  headers=("work", "DVC", "cairn", "ratio"))
    return 0


def cli(project: Path, *args: str) -> float:
    """Wall seconds of one ``cairn ARGS`` command run in ``project``."""
    settle()
    return C.time_command([str(C.CAIRN_BIN), *args], cwd=project)


def _cli_project(folder: Path, used: bool = True) -> Path:
    """A project folder: a cairn.yaml, its data (store, database) under .cairn; ``used``:
    a command has run in it already (outside the timing), so its database exists."""
    folder.mkdir()
    (folder / "cairn.yaml").write_text(
        "- step:\n    name: noop\n    image: python:3.11\n    command: \"true\"\n")
    if used:
        subprocess.run([str(C.CAIRN_BIN), "dataset", "ls"], cwd=folder, check=True,
                       capture_output=True)
    return folder


def _create_floor(dest: Path, src: Path) -> float:
    """What the kernel alone takes to read every file of ``src`` and create and write a
    copy of it under ``dest`` (16 folders), in this process: the least any copying add
    can cost here, before hashing, syncing or naming anything."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    for i in range(16):
        (dest / f"{i:x}").mkdir(parents=True)
    settle()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    t0 = time.perf_counter()
    for n, path in enumerate(files):
        fd = os.open(path, os.O_RDONLY)
        data = os.read(fd, 1 << 24)
        os.close(fd)
        fd = os.open(f"{dest}/{n & 15:x}/{n}", flags, 0o444)
        os.write(fd, data)
        os.close(fd)
    return time.perf_counter() - t0


def _row(label: str, dvc: list[float | None], cairn: list[float]) -> list[str]:
    d, c = warm(dvc), warm(cairn)
    assert c is not None
    return [label, C.fmt_seconds(d) if dvc and d is not None else ("failed" if dvc else "—"),
            C.fmt_seconds(c), C.ratio(1 / c, 1 / d if d else None)]


def _rate(gb: float, times: list[float | None]) -> str:
    t = warm(times)
    return f"{gb / t:.2f} GB/s" if t else "—"


def _fs_type(path: Path) -> str:
    for argv in (["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)],
                 ["stat", "-f", "-c", "%T", str(path)]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            continue
        if out:
            return out
    return "?"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
