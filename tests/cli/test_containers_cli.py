"""The container and volume commands through ``imagesim.cli.main``: docker's flags, spellings
and output formats, on a real store with the built-in library images."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
from click.testing import CliRunner

from imagesim.cli import main


@pytest.fixture(scope="module")
def template_root(tmp_path_factory):
    """A store with the library images pulled once; each test gets a copy."""
    root = tmp_path_factory.mktemp("tmpl") / "root"
    for image in ("ubuntu", "tomcat"):
        code, _, err = _run(root, "pull", image)
        assert code == 0, err
    return root


@pytest.fixture()
def root(template_root, tmp_path):
    dst = tmp_path / "root"
    # cp -a keeps the whiteout device nodes and xattrs of the unpacked layers
    subprocess.run(["cp", "-a", str(template_root), str(dst)], check=True)
    return dst


def _run(root, *args, input=None):
    runner = CliRunner()
    with runner.isolation(input=input) as streams:
        code = main(["--root", str(root), *args])
    return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()


def sim(root, *args, input=None, ok=True):
    code, out, err = _run(root, *args, input=input)
    if ok:
        assert code == 0, f"{args}: exit {code}\n{out}\n{err}"
    return out


def test_docker_flag_spellings(root, tmp_path):
    host = tmp_path / "host_data"
    cid = sim(root, "run", "-itd", "--privileged=true", "-e", "K=V", "-p", "5000:5000",
              "--name", "u1", "-v", f"{host}:/tmp/docker_data", "ubuntu").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    info = json.loads(sim(root, "inspect", "u1"))[0]
    assert info["HostConfig"]["Privileged"] is True
    assert "K=V" in info["Config"]["Env"]
    assert info["Config"]["Tty"] is True and info["Config"]["OpenStdin"] is True
    assert info["HostConfig"]["PortBindings"] == {"5000/tcp": [{"HostIp": "",
                                                                "HostPort": "5000"}]}
    assert info["State"]["Running"] is True
    # -m="vim cmd add ok" -a="zzyy" arrive from the shell as -m=vim cmd add ok, -a=zzyy
    sim(root, "exec", "u1", "sh", "-c", "mkdir -p /opt/x && echo 1 > /opt/x/f")
    image_id = sim(root, "commit", "-m=vim cmd add ok", "-a=zzyy", cid[:12],
                   "atguigu/myubuntu:1.3").strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image_id)
    cfg = json.loads(sim(root, "inspect", "atguigu/myubuntu:1.3"))[0]
    assert cfg["Id"] == image_id
    # --privileged=false is accepted and means false
    sim(root, "create", "--privileged=false", "--name", "p0", "ubuntu")
    assert json.loads(sim(root, "inspect", "p0"))[0]["HostConfig"]["Privileged"] is False
    # options after the image belong to the command
    sim(root, "run", "-d", "--name", "cmd1", "ubuntu", "ls", "-la", "/")
    assert json.loads(sim(root, "inspect", "cmd1"))[0]["Args"] == ["-la", "/"]


def test_ps_columns_and_states(root):
    sim(root, "run", "-d", "-p", "8081:8080", "--name", "t1", "tomcat")
    sim(root, "create", "--name", "c1", "ubuntu")
    lines = sim(root, "ps").splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS",
                                "PORTS", "NAMES"]
    assert lines[0].startswith("CONTAINER ID   IMAGE     COMMAND")
    assert len(lines) == 2 and lines[1].endswith("t1")
    assert '"catalina.sh run"' in lines[1]
    assert "0.0.0.0:8081->8080/tcp" in lines[1] and " Up " in lines[1]
    header = lines[0]
    for col in ("IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"):
        # tabwriter alignment: each column starts in every row where its header starts,
        # right after at least one space
        at = header.index(col)
        assert lines[1][at - 1] == " " and lines[1][at] != " "
    all_lines = sim(root, "ps", "-a").splitlines()
    assert any(line.endswith("c1") and "Created" in line for line in all_lines)
    ids = sim(root, "ps", "-aq").split()
    assert len(ids) == 2 and all(len(i) == 12 for i in ids)
    sized = sim(root, "ps", "-s").splitlines()
    assert sized[0].endswith("SIZE")
    assert re.search(r"\d+(\.\d+)?[kMG]?B \(virtual \d+(\.\d+)?[kMG]?B\)$", sized[1])
    sim(root, "stop", "t1")
    assert re.search(r"Exited \(0\) .* ago", sim(root, "ps", "-a"))
    assert sim(root, "ps", "-q") == ""


def test_names_rm_rename(root):
    sim(root, "run", "-d", "--name", "a1", "ubuntu", "sleep", "1000")
    code, _, err = _run(root, "run", "-d", "--name", "a1", "ubuntu")
    assert code == 1 and 'The container name "/a1" is already in use' in err
    code, _, err = _run(root, "rm", "a1")
    assert code == 1 and "cannot remove a running container" in err
    sim(root, "rename", "a1", "b1")
    assert sim(root, "rm", "-f", "b1").strip() == "b1"
    code, _, err = _run(root, "inspect", "b1")
    assert code == 1 and "No such object: b1" in err
    code, _, err = _run(root, "exec", "nope", "ls")
    assert code == 1 and "No such container: nope" in err


def test_diff_and_logs_from_the_shell(root):
    out = sim(root, "run", "--name", "s1", "ubuntu", "sh", "-c",
              "echo hello; rm /etc/os-release; mkdir /work; echo x > /work/f")
    assert out == "hello\n"
    assert sim(root, "diff", "s1").splitlines() == [
        "C /etc", "D /etc/os-release", "A /work", "A /work/f"]
    assert sim(root, "logs", "s1") == "hello\n"
    assert "Exited (0)" in sim(root, "ps", "-a")
    code, _, _ = _run(root, "run", "ubuntu", "sh", "-c", "exit 3")
    assert code == 3
    code, _, err = _run(root, "exec", "s1", "ls")
    assert code == 1 and "is not running" in err


def test_interactive_shell_reads_stdin(root):
    out = sim(root, "run", "-i", "--name", "i1", "ubuntu", "/bin/bash",
              input="cd /tmp\necho data > note.txt\ncat note.txt\nexit\n")
    assert "data" in out
    assert "A /tmp/note.txt" in sim(root, "diff", "i1")


def test_cp_both_ways(root, tmp_path):
    sim(root, "run", "-d", "--name", "k1", "ubuntu", "sleep", "1000")
    src = tmp_path / "in.txt"
    src.write_text("from host\n")
    sim(root, "cp", str(src), "k1:/tmp/")
    sim(root, "cp", str(src), "k1:/tmp/renamed.txt")
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a").write_text("A")
    os.symlink("sub/a", d / "link")
    sim(root, "cp", str(d), "k1:/opt")        # /opt exists: copied as /opt/dir
    sim(root, "cp", f"{d}/.", "k1:/srv")      # contents into /srv
    diff = sim(root, "diff", "k1").splitlines()
    for line in ("A /tmp/in.txt", "A /tmp/renamed.txt", "A /opt/dir/sub/a", "A /opt/dir/link",
                 "A /srv/sub/a"):
        assert line in diff
    out = tmp_path / "out"
    out.mkdir()
    sim(root, "cp", "k1:/opt/dir", str(out))
    assert (out / "dir" / "sub" / "a").read_text() == "A"
    assert os.readlink(out / "dir" / "link") == "sub/a"
    # a symlink is copied as a link; -L copies what it points to
    target = sim(root, "exec", "k1", "readlink", "/etc/os-release").strip()
    sim(root, "cp", "k1:/etc/os-release", str(out / "osr"))
    assert os.readlink(out / "osr") == target
    sim(root, "cp", "-L", "k1:/etc/os-release", str(out / "osr2"))
    assert "Ubuntu" in (out / "osr2").read_text()
    code, _, err = _run(root, "cp", "k1:/nope", str(out))
    assert code == 1 and "Could not find the file /nope" in err
    code, _, err = _run(root, "cp", str(d), "k1:/etc/os-release")
    assert code == 1 and "cannot copy a directory to a file" in err
    code, _, err = _run(root, "cp", str(src), "k1:/missing/dir/")
    assert code == 1 and "must exist" in err


def test_export_excludes_volumes(root, tmp_path):
    host = tmp_path / "vol"
    host.mkdir()
    (host / "secret").write_text("volume data")
    sim(root, "run", "-d", "--name", "e1", "-v", f"{host}:/data", "ubuntu", "sleep", "9")
    sim(root, "exec", "e1", "sh", "-c", "echo x > /root/added; rm /etc/os-release")
    target = tmp_path / "e1.tar"
    sim(root, "export", "-o", str(target), "e1")
    with tarfile.open(target) as tar:
        names = set(tar.getnames())
    assert "root/added" in names and "etc/hosts" in names
    assert "etc/os-release" not in names
    assert "data/secret" not in names and "data" in names


def test_inspect_falls_back_to_images_and_formats(root):
    info = json.loads(sim(root, "inspect", "ubuntu"))[0]
    assert info["Id"].startswith("sha256:")
    sim(root, "run", "-d", "--name", "f1", "-v", "namedvol:/data", "ubuntu", "x")
    assert sim(root, "inspect", "-f", "{{.Name}}", "f1").strip() == "/f1"
    mounts = json.loads(sim(root, "inspect", "-f", "{{json .Mounts}}", "f1"))
    assert mounts[0]["Type"] == "volume" and mounts[0]["Name"] == "namedvol"
    gd = json.loads(sim(root, "inspect", "f1"))[0]["GraphDriver"]["Data"]
    assert set(gd) == {"LowerDir", "MergedDir", "UpperDir", "WorkDir"}


def test_volume_commands(root):
    assert sim(root, "volume", "create", "v1").strip() == "v1"
    assert sim(root, "volume", "ls").splitlines() == ["DRIVER    VOLUME NAME", "local     v1"]
    info = json.loads(sim(root, "volume", "inspect", "v1"))[0]
    assert info["Name"] == "v1" and info["Driver"] == "local"
    assert info["Mountpoint"] == str(root / "volumes" / "v1" / "_data")
    sim(root, "run", "-d", "--name", "vv", "-v", "v1:/data", "-v", "/anon", "ubuntu", "x")
    code, _, err = _run(root, "volume", "rm", "v1")
    assert code == 1 and "volume is in use" in err
    sim(root, "rm", "-f", "-v", "vv")
    assert sim(root, "volume", "ls", "-q").split() == ["v1"]  # anonymous one went with -v
    assert sim(root, "volume", "rm", "v1").strip() == "v1"
    sim(root, "run", "-d", "--name", "vw", "-v", "/anon2", "ubuntu", "x")
    sim(root, "rm", "-f", "vw")
    out = sim(root, "volume", "prune", "-f")
    assert out.startswith("Deleted Volumes:\n") and "Total reclaimed space:" in out
    assert sim(root, "volume", "ls", "-q") == ""


def test_bad_input_is_refused_cleanly(root):
    code, _, err = _run(root, "run", "-d", "-v", "rel:path", "ubuntu")
    assert code == 1 and "must be absolute" in err
    code, _, err = _run(root, "run", "-d", "-p", "x:80", "ubuntu")
    assert code == 1
    code, _, err = _run(root, "commit", "-c", "RUN ls", "nope")
    assert code == 1
    assert sim(root, "ps", "-aq") == ""
    code, out, err = _run(root, "volume", "inspect", "zz")
    assert code == 1 and json.loads(out) == [] and "no such volume" in err


def _proc(root, *args, check=True):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    r = subprocess.run([sys.executable, "-m", "imagesim", "--root", str(root), *args],
                       capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_mount_the_container_view_with_fuse(root, tmp_path):
    from tests.conftest import need_fuse

    need_fuse()
    host = tmp_path / "vol"
    host.mkdir()
    (host / "from-host").write_text("host\n")
    sim(root, "run", "-d", "--name", "fm", "-v", f"{host}:/data", "-v", f"{host}:/ro:ro",
        "ubuntu", "sleep", "1")
    mp = tmp_path / "mnt"
    mp.mkdir()
    _proc(root, "mount", "fm", str(mp))
    try:
        # a real program edits the container's files through the kernel
        assert "Ubuntu" in (mp / "etc" / "os-release").read_text()
        (mp / "etc" / "motd").write_text("hello from the mount\n")
        subprocess.run(["cp", "-a", str(mp / "etc" / "hosts"), str(mp / "root" / "hosts.bak")],
                       check=True)
        # volumes appear at their paths; writes go to the host; :ro gives EROFS
        assert (mp / "data" / "from-host").read_text() == "host\n"
        (mp / "data" / "from-mount").write_text("mount\n")
        assert (host / "from-mount").read_text() == "mount\n"
        with pytest.raises(OSError) as e:
            (mp / "ro" / "x").write_text("x")
        assert e.value.errno == errno.EROFS
        # while mounted, exec goes through the mount: both sides see each change at once
        assert _proc(root, "exec", "fm", "cat", "/etc/motd").stdout == "hello from the mount\n"
        _proc(root, "exec", "fm", "sh", "-c", "echo from exec > /root/e.txt")
        assert (mp / "root" / "e.txt").read_text() == "from exec\n"
    finally:
        _proc(root, "umount", str(mp))
    assert not os.path.ismount(mp)
    diff = sim(root, "diff", "fm").splitlines()
    assert "A /etc/motd" in diff and "A /root/hosts.bak" in diff and "A /root/e.txt" in diff
    assert sim(root, "exec", "fm", "cat", "/root/e.txt") == "from exec\n"  # unmounted now
    assert not any("from-mount" in line for line in diff)


def test_cp_tar_streams_and_export_to_stdout(root, tmp_path):
    sim(root, "run", "-d", "--name", "ts", "ubuntu", "sleep", "9")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"streamed in\n"
        info = tarfile.TarInfo("sub/in.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    runner = CliRunner()
    with runner.isolation(input=buf.getvalue()) as streams:
        code = main(["--root", str(root), "cp", "-", "ts:/opt"])
    assert code == 0, streams[1].getvalue()
    assert "A /opt/sub/in.txt" in sim(root, "diff", "ts").splitlines()
    with runner.isolation() as streams:
        code = main(["--root", str(root), "cp", "ts:/opt/sub", "-"])
    assert code == 0
    with tarfile.open(fileobj=io.BytesIO(streams[0].getvalue())) as tar:
        assert tar.getnames() == ["sub", "sub/in.txt"]
        assert tar.extractfile("sub/in.txt").read() == b"streamed in\n"
    with runner.isolation() as streams:
        code = main(["--root", str(root), "export", "ts"])
    assert code == 0
    with tarfile.open(fileobj=io.BytesIO(streams[0].getvalue())) as tar:
        names = tar.getnames()
    assert "opt/sub/in.txt" in names and names == sorted(names, key=lambda n: n.split("/"))


@pytest.mark.parametrize(("argv", "expected"), [
    (["-m=vim cmd add ok", "-a=zzyy", "c1"], ["-m", "vim cmd add ok", "-a", "zzyy", "c1"]),
    (["-mmsg", "c1"], ["-m", "msg", "c1"]),
    (["--message=x y", "c1", "repo:1"], ["--message=x y", "c1", "repo:1"]),
    (["-c", "ENV A=1", "c1"], ["-c", "ENV A=1", "c1"]),
])
def test_pflag_style_values_for_commit(argv, expected):
    from imagesim.cli.containers import commit

    ctx = commit.make_context("commit", list(expected), resilient_parsing=True)
    assert commit._normalise(ctx, list(argv)) == expected


@pytest.mark.parametrize(("argv", "expected"), [
    (["-itd", "--privileged=true", "ubuntu", "ls", "-la"],
     ["-itd", "--privileged", "ubuntu", "ls", "-la"]),
    (["--privileged=false", "--rm=true", "ubuntu"], ["--rm", "ubuntu"]),
    (["-p5000:5000", "-e=K=V", "--name=u1", "registry"],
     ["-p", "5000:5000", "-e", "K=V", "--name=u1", "registry"]),
    (["-i=false", "-t", "ubuntu", "-x=1"], ["-t", "ubuntu", "-x=1"]),
])
def test_pflag_style_flags_for_run(argv, expected):
    from imagesim.cli.containers import run

    ctx = run.make_context("run", ["ubuntu"], resilient_parsing=True)
    assert run._normalise(ctx, list(argv)) == expected
