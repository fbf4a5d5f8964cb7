"""The image commands through ``main([...])`` with captured streams, and as real
subprocesses where pipes matter (save to stdout, load from stdin)."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from imagesim.cli import main
from imagesim.cli._util import Table, human_duration, human_size, render, template, time_ago
from imagesim.cli.system import image_usage
from imagesim.store import Store


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    r = str(tmp_path_factory.mktemp("cli") / "root")
    assert main(["--root", r, "samples", "-q"]) == 0
    return r


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- formatting helpers ---------------------------------------------------------------------

@pytest.mark.parametrize("size, text", [(0, "0B"), (999, "999B"), (1000, "1kB"),
                                        (1234, "1.23kB"), (77826739, "77.8MB"),
                                        (5_496_000, "5.5MB"), (1_084_000_000, "1.08GB")])
def test_human_size_like_docker(size, text):
    assert human_size(size) == text


@pytest.mark.parametrize("seconds, text", [(0.5, "Less than a second"), (1, "1 second"),
                                           (59, "59 seconds"), (60, "About a minute"),
                                           (150, "2 minutes"), (3600, "About an hour"),
                                           (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
                                           (21 * 86400, "3 weeks"), (90 * 86400, "3 months"),
                                           (3 * 365 * 86400, "3 years")])
def test_human_duration_like_docker(seconds, text):
    assert human_duration(seconds) == text


def test_time_ago():
    now = dt.datetime(2024, 1, 1, 0, 2, 30, tzinfo=dt.UTC)
    assert time_ago("2024-01-01T00:00:00.123456789Z", now) == "2 minutes ago"
    assert time_ago(None) == "N/A"


def test_table_aligns_like_tabwriter():
    t = Table(["A", "LONGER HEADER", "C"])
    t.add("x", "y", "z")
    assert t.lines() == ["A         LONGER HEADER   C", "x         y               z"]


def test_templates_and_json():
    row = {"Repository": "ubuntu", "Tag": "latest", "Size": "2MB"}
    assert template("{{.Repository}}:{{.Tag}}", row) == "ubuntu:latest"
    assert template("{{json .Tag}}\\t{{upper .Repository}}", row) == '"latest"\tUBUNTU'
    out = io.StringIO()
    render([row], "json", [("REPOSITORY", "Repository")], out)
    assert json.loads(out.getvalue()) == row
    out = io.StringIO()
    render([row], "table {{.Repository}}\t{{.Size}}", [("REPOSITORY", "Repository"),
                                                        ("SIZE", "Size")], out)
    assert out.getvalue().splitlines() == ["REPOSITORY   SIZE", "ubuntu       2MB"]


# -- commands --------------------------------------------------------------------------------

def test_images_table_quiet_digests_and_formats(root, capsys):
    code, out, _ = run(capsys, "--root", root, "images")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert any(line.split()[:2] == ["mysql", "5.7"] for line in lines[1:])
    assert any(line.split()[:2] == ["billygoo/tomcat8-jdk8", "latest"] for line in lines)
    store = Store(root)
    ubuntu = store.resolve("ubuntu")
    code, out, _ = run(capsys, "--root", root, "images", "-q")
    assert ubuntu.id.short in out.split()
    code, out, _ = run(capsys, "--root", root, "images", "--digests", "ubuntu")
    assert out.splitlines()[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"]
    assert str(ubuntu.digest) in out
    code, out, _ = run(capsys, "--root", root, "images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "redis:6.0.8" in out.splitlines()
    code, out, _ = run(capsys, "--root", root, "image", "ls", "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {"Repository", "Tag", "ID", "CreatedSince", "Size"} <= set(rows[0])


def test_history_rows_and_missing(root, capsys):
    code, out, _ = run(capsys, "--root", root, "history", "tomcat")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    store = Store(root)
    assert lines[1].startswith(store.resolve("tomcat").id.short)
    assert lines[2].startswith("<missing>")
    assert any("CMD [\"catalina.sh\" \"run\"]" in line for line in lines)
    assert any("…" in line for line in lines)
    _code, out, _ = run(capsys, "--root", root, "history", "--no-trunc", "-q", "ubuntu")
    assert out.splitlines()[0] == str(store.resolve("ubuntu").id)


def test_history_names_the_parent_after_a_commit_like_image(root, capsys, tmp_path):
    store = Store(root)
    rootfs = tmp_path / "t.tar"
    with tarfile.open(rootfs, "w") as tf:
        info = tarfile.TarInfo("usr/bin/vim")
        data = b"vim"
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    from imagesim import archive
    ubuntu = store.resolve("ubuntu")
    with open(rootfs, "rb") as f:
        d, n = store.blobs.put_stream(f)
    child = ubuntu.append_layer(
        archive.oci.Descriptor(archive.oci.OCI_LAYER, d, n), d, created_by="/bin/bash",
        comment="vim cmd add ok", author="zzyy")
    store.put_image(child, ["atguigu/myubuntu:1.3"])
    _code, out, _ = run(capsys, "--root", root, "history", "atguigu/myubuntu:1.3")
    lines = out.splitlines()
    assert "vim cmd add ok" in lines[1]
    assert lines[2].startswith(ubuntu.id.short)          # the parent is a local image
    run(capsys, "--root", root, "rmi", "atguigu/myubuntu:1.3")


def test_tag_and_rmi_lines(root, capsys):
    code, out, err = run(capsys, "--root", root, "tag", "ubuntu", "zzyyubuntu:1.2")
    assert code == 0 and out == ""
    code, out, err = run(capsys, "--root", root, "rmi", "zzyyubuntu:1.2", "nosuch:1")
    assert code == 1
    assert out == "Untagged: zzyyubuntu:1.2\n"
    assert "Error response from daemon: No such image: nosuch:1" in err
    code, out, err = run(capsys, "--root", root, "tag", "ubuntu", "BAD")
    assert code == 1 and "must be lowercase" in err


def test_image_inspect(root, capsys):
    code, out, _ = run(capsys, "--root", root, "image", "inspect", "mysql:5.7")
    [obj] = json.loads(out)
    store = Store(root)
    img = store.resolve("mysql:5.7")
    assert obj["Id"] == str(img.id)
    assert obj["RootFS"]["Layers"] == [str(d) for d in img.diff_ids]
    assert obj["Config"]["Volumes"] == {"/var/lib/mysql": {}}
    for d in [obj["GraphDriver"]["Data"]["UpperDir"],
              *obj["GraphDriver"]["Data"]["LowerDir"].split(":")]:
        assert os.path.isdir(d)
    code, out, _ = run(capsys, "--root", root, "image", "inspect", "-f", "{{.Os}}", "ubuntu")
    assert out == "linux\n"
    code, out, err = run(capsys, "--root", root, "image", "inspect", "nosuch")
    assert code == 1 and "No such image: nosuch" in err


def test_layers_command_shows_sharing(root, capsys):
    _code, out, _ = run(capsys, "--root", root, "layers", "mysql:5.7")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["#", "DIFF", "ID"]
    assert "tomcat:latest" in lines[1] and "ubuntu:latest" in lines[1]
    assert lines[-1].rstrip().endswith("-")


def test_search(capsys):
    code, out, _ = run(capsys, "search", "tomcat")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DESCRIPTION", "STARS", "OFFICIAL"]
    assert lines[1].startswith("tomcat ") and lines[1].rstrip().endswith("[OK]")
    _code, out, _ = run(capsys, "search", "--filter", "is-official=true", "tomcat")
    assert "billygoo" not in out


def test_system_df_sizes_add_up(root, capsys):
    code, out, _ = run(capsys, "--root", root, "system", "df")
    assert code == 0
    assert out.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert out.splitlines()[1].split()[:2] == ["Images", "8"]
    _code, out, _ = run(capsys, "--root", root, "system", "df", "-v")
    assert out.startswith("Images space usage:")
    assert "SHARED SIZE" in out and "UNIQUE SIZE" in out
    rows = image_usage(Store(root))
    for r in rows:
        unique = r["_size"] - r["_shared"]
        assert r["_size"] == r["_shared"] + unique
    by = {(r["Repository"], r["Tag"]): r for r in rows}
    base = by[("ubuntu", "latest")]["_size"]
    assert by[("tomcat", "latest")]["_shared"] == base == by[("mysql", "5.7")]["_shared"]
    assert by[("hello-world", "latest")]["_shared"] == 0


def test_save_load_and_oci_dir_through_the_cli(root, capsys, tmp_path):
    archive_path = str(tmp_path / "img.tar")
    code, _, err = run(capsys, "--root", root, "save", "-o", archive_path, "redis:6.0.8")
    assert code == 0, err
    new_root = str(tmp_path / "new")
    code, out, _ = run(capsys, "--root", new_root, "load", "-i", archive_path)
    assert out == "Loaded image: redis:6.0.8\n"
    assert Store(new_root).resolve("redis:6.0.8").digest == \
        Store(root).resolve("redis:6.0.8").digest
    code, out, _ = run(capsys, "--root", root, "save", "--oci-dir", str(tmp_path / "lay"),
                       "registry")
    assert (tmp_path / "lay" / "index.json").exists()
    code, out, _ = run(capsys, "--root", new_root, "image", "load", "-i", str(tmp_path / "lay"))
    assert out == "Loaded image: registry:latest\n"
    code, out, err = run(capsys, "--root", new_root, "load", "-i", str(tmp_path / "nope.tar"))
    assert code == 1 and "no such file" in err


def test_import_with_change_and_message(root, capsys, tmp_path):
    path = tmp_path / "rootfs.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = 2
        tf.addfile(info, io.BytesIO(b"hi"))
    path.write_bytes(gzip.compress(buf.getvalue()))
    code, out, err = run(capsys, "--root", root, "import", "-c", "CMD [\"/hello\"]",
                         "-m", "imported by test", str(path), "myimport:1")
    assert code == 0, err
    assert out.startswith("sha256:") and len(out.strip()) == 71
    code, out, _ = run(capsys, "--root", root, "history", "myimport:1")
    assert "imported by test" in out
    code, out, _ = run(capsys, "--root", root, "image", "inspect", "-f",
                       "{{json .Config.Cmd}}", "myimport:1")
    assert out.strip() == '["/hello"]'
    run(capsys, "--root", root, "rmi", "myimport:1")


def test_image_prune_removes_dangling_only(tmp_path, capsys):
    r = str(tmp_path / "p")
    main(["--root", r, "samples", "-q"])
    store = Store(r)
    hello = store.resolve("hello-world")
    store.untag("hello-world")
    code, out, _ = run(capsys, "--root", r, "image", "prune", "-f")
    assert code == 0
    assert out.splitlines()[:2] == ["Deleted Images:", f"deleted: {hello.id}"]
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert store.resolve("ubuntu")
    _code, out, _ = run(capsys, "--root", r, "system", "prune", "-a", "-f")
    assert Store(r).images() == []
    assert "Total reclaimed space:" in out


def test_help_lists_the_image_group(capsys):
    _code, out, _ = run(capsys, "image", "--help")
    for name in ("ls", "inspect", "history", "tag", "rm", "prune", "save", "load", "import",
                 "layers"):
        assert f"  {name}" in out


def test_save_to_a_pipe_and_load_from_stdin_as_real_processes(root, tmp_path):
    env = {**os.environ, "IMAGESIM_ROOT": root}
    new_root = str(tmp_path / "piped")
    save = subprocess.Popen([sys.executable, "-m", "imagesim", "save", "hello-world"],
                            stdout=subprocess.PIPE, env=env)
    load = subprocess.run([sys.executable, "-m", "imagesim", "--root", new_root, "load"],
                          stdin=save.stdout, capture_output=True, text=True, env=env,
                          timeout=120)
    save.stdout.close()
    assert save.wait(60) == 0
    assert load.returncode == 0, load.stderr
    assert load.stdout == "Loaded image: hello-world:latest\n"
    images = subprocess.run([sys.executable, "-m", "imagesim", "--root", new_root, "images"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert images.stdout.splitlines()[1].split()[:2] == ["hello-world", "latest"]


def test_system_df_counts_containers_and_prune_keeps_running_ones(tmp_path, capsys):
    r = str(tmp_path / "df")
    main(["--root", r, "samples", "-q"])
    assert main(["--root", r, "create", "--name", "u1", "ubuntu"]) == 0
    assert main(["--root", r, "run", "-d", "--name", "r1", "redis:6.0.8"]) == 0
    code, out, _ = run(capsys, "--root", r, "system", "df")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["Images"][1:3] == ["8", "2"]
    assert rows["Containers"][1:3] == ["2", "1"]
    code, out, _ = run(capsys, "--root", r, "rmi", "ubuntu")
    assert code == 1
    code, out, _ = run(capsys, "--root", r, "system", "prune", "-f")
    assert code == 0 and out.startswith("Deleted Containers:")
    code, out, _ = run(capsys, "--root", r, "system", "df")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["Containers"][1:3] == ["1", "1"]


def test_fsck_command_reports_and_repairs(tmp_path, capsys):
    r = str(tmp_path / "f")
    main(["--root", r, "samples", "-q"])
    code, out, _ = run(capsys, "--root", r, "fsck")
    assert code == 0 and out.strip().endswith("0 problems, 0 repaired")
    store = Store(r)
    import shutil
    shutil.rmtree(os.path.dirname(store.layer_dir(store.resolve("redis:6.0.8").diff_ids[-1])))
    code, out, _ = run(capsys, "--root", r, "fsck")
    assert code == 1 and "is not unpacked" in out
    code, out, _ = run(capsys, "--root", r, "fsck", "--repair")
    assert code == 0 and out.startswith("repaired: ")
    code, out, _ = run(capsys, "--root", r, "fsck", "--deep")
    assert code == 0 and "0 problems" in out


def test_layers_files_view(root, capsys):
    code, out, _ = run(capsys, "--root", root, "layers", "--files", "ubuntu")
    assert code == 0
    assert "/var/log/dpkg.log" in out          # the base's second layer removes it


def test_progress_is_quiet_off_a_terminal_and_draws_on_one():
    from imagesim.progress import byte_progress, steps
    quiet = io.StringIO()
    with byte_progress("Saving", 100, stream=quiet) as advance:
        advance(50)
    assert quiet.getvalue() == ""
    shown = io.StringIO()
    with byte_progress("Saving", 100, stream=shown, enabled=True) as advance:
        advance(100)
    with steps("Layers", 2, stream=shown, enabled=True) as step:
        step("one")
        step("two")
    assert "Saving" in shown.getvalue() and "Layers" in shown.getvalue()
