"""The six seed lessons of the container issue, end to end through the CLI, with the
built-in library images. Lesson 3 runs every step as a real ``python -m imagesim``
subprocess (state shared across processes through the store); the others use ``main()``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from imagesim.cli import main
from imagesim.store import Store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(root, *args, input=None):
    runner = CliRunner()
    with runner.isolation(input=input) as streams:
        code = main(["--root", str(root), *args])
    return code, streams[0].getvalue().decode(), streams[1].getvalue().decode()


def sim(root, *args, input=None):
    code, out, err = _run(root, *args, input=input)
    assert code == 0, f"{args}: exit {code}\n{out}\n{err}"
    return out


def proc(root, *args, check=True):
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "imagesim", "--root", str(root), *args],
                       capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _has_command(module: str) -> bool:
    return importlib.util.find_spec(f"imagesim.cli.{module}") is not None


def test_lesson1_layers_are_shared_and_writes_copy_up(tmp_path):
    root = tmp_path / "root"
    sim(root, "pull", "tomcat")
    sim(root, "pull", "mysql:5.7")
    sim(root, "run", "-d", "--name", "t1", "tomcat")
    sim(root, "run", "-d", "--name", "m1", "mysql:5.7")
    t_lower = json.loads(sim(root, "inspect", "t1"))[0]["GraphDriver"]["Data"]["LowerDir"]
    m_lower = json.loads(sim(root, "inspect", "m1"))[0]["GraphDriver"]["Data"]["LowerDir"]
    shared = set(t_lower.split(":")) & set(m_lower.split(":"))
    assert shared, "tomcat and mysql:5.7 must share their base layer directory"
    # the base is stored once: exactly one directory per diff id under layers/
    store = Store(root)
    usage = {u.diff_id: u for u in store.layer_usage()}
    assert any(len(u.images) >= 2 for u in usage.values())
    if _has_command("system"):
        df = proc(root, "system", "df", "-v").stdout
        assert "SHARED SIZE" in df
    # a write copies the file up; diff shows it; the image's file is untouched
    base_file = next(os.path.join(d, "etc", "hosts") for d in t_lower.split(":")
                     if os.path.exists(os.path.join(d, "etc", "hosts")))
    with open(base_file, "rb") as f:
        before = f.read()
    sim(root, "exec", "t1", "sh", "-c", "echo '10.0.0.2 db' >> /etc/hosts")
    assert "C /etc/hosts" in sim(root, "diff", "t1").splitlines()
    with open(base_file, "rb") as f:
        assert f.read() == before
    upper = json.loads(sim(root, "inspect", "t1"))[0]["GraphDriver"]["Data"]["UpperDir"]
    with open(os.path.join(upper, "etc", "hosts"), "rb") as f:
        assert f.read().endswith(b"10.0.0.2 db\n")
    assert "C /etc/hosts" not in sim(root, "diff", "m1")


def test_lesson2_commit_an_installed_editor(tmp_path):
    root = tmp_path / "root"
    sim(root, "pull", "ubuntu")
    sim(root, "run", "-it", "--name", "box", "ubuntu", "/bin/bash",
        input="apt-get update\napt-get -y install vim\nexit\n")
    diff = sim(root, "diff", "box").splitlines()
    assert "C /var/lib/dpkg/status" in diff
    assert any(line.startswith("A /usr/bin/") for line in diff)
    cid = json.loads(sim(root, "inspect", "box"))[0]["Id"]
    new_id = sim(root, "commit", "-m=vim cmd add ok", "-a=zzyy", cid,
                 "atguigu/myubuntu:1.3").strip()
    store = Store(root)
    base, new = store.resolve("ubuntu"), store.resolve("atguigu/myubuntu:1.3")
    assert str(new.id) == new_id
    assert list(new.diff_ids[:-1]) == list(base.diff_ids)          # base layers reused
    assert [d.digest for d in new.layers[:-1]] == [d.digest for d in base.layers]
    assert len(new.diff_ids) == len(base.diff_ids) + 1
    row = new.history[-1]
    assert row["author"] == "zzyy" and row["comment"] == "vim cmd add ok"
    assert len(new.history) == len(base.history) + 1
    if _has_command("images"):
        hist = proc(root, "history", "atguigu/myubuntu:1.3").stdout.splitlines()
        assert "vim cmd add ok" in hist[1]
    out = sim(root, "run", "--rm", "atguigu/myubuntu:1.3", "sh", "-c",
              "grep -c '^Package: vim$' /var/lib/dpkg/status; ls /usr/bin")
    assert out.splitlines()[0] == "1"
    assert "vim.basic" in out.split()


def test_lesson3_volumes_rw_ro_inherited_and_surviving(tmp_path):
    """Every step a separate process, as a learner types it."""
    root = tmp_path / "root"
    host = tmp_path / "host_data"
    proc(root, "pull", "ubuntu")
    proc(root, "run", "-itd", "--privileged=true", "-v", f"{host}:/tmp/docker_data",
         "--name", "u1", "ubuntu")
    mounts = json.loads(proc(root, "inspect", "u1").stdout)[0]["Mounts"]
    assert mounts == [{"Type": "bind", "Source": str(host), "Destination": "/tmp/docker_data",
                       "Mode": "", "RW": True, "Propagation": "rprivate"}]
    # container -> host and host -> container
    proc(root, "exec", "u1", "sh", "-c", "echo inside > /tmp/docker_data/c.txt")
    assert (host / "c.txt").read_text() == "inside\n"
    (host / "h.txt").write_text("outside\n")
    assert proc(root, "exec", "u1", "cat", "/tmp/docker_data/h.txt").stdout == "outside\n"
    # read-only: writes inside fail with EROFS, host writes still appear
    proc(root, "run", "-itd", "--privileged=true", "-v", f"{host}:/tmp/docker_data:ro",
         "--name", "u1ro", "ubuntu")
    r = proc(root, "exec", "u1ro", "sh", "-c", "echo x > /tmp/docker_data/ro.txt",
             check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert not (host / "ro.txt").exists()
    (host / "later.txt").write_text("later\n")
    assert proc(root, "exec", "u1ro", "cat", "/tmp/docker_data/later.txt").stdout == "later\n"
    # inherited
    proc(root, "run", "-itd", "--privileged=true", "--volumes-from", "u1", "--name", "u2",
         "ubuntu")
    assert proc(root, "exec", "u2", "cat", "/tmp/docker_data/c.txt").stdout == "inside\n"
    # survives removal of both
    proc(root, "rm", "-f", "u1", "u2", "u1ro")
    assert sorted(os.listdir(host)) == ["c.txt", "h.txt", "later.txt"]
    assert proc(root, "ps", "-aq").stdout == ""


def test_lesson4_mysql_data_lost_without_volume_kept_with_one(tmp_path):
    root = tmp_path / "root"
    data = tmp_path / "zzyyuse" / "mysql" / "data"
    sim(root, "run", "-d", "-p", "3306:3306", "-e", "MYSQL_ROOT_PASSWORD=123456",
        "--name", "m0", "mysql:5.7")
    sim(root, "exec", "m0", "sh", "-c", "echo row > /var/lib/mysql/db1.ibd")
    sim(root, "rm", "-f", "m0")
    sim(root, "run", "-d", "-p", "3306:3306", "-e", "MYSQL_ROOT_PASSWORD=123456",
        "--name", "m0", "mysql:5.7")
    code, _, _ = _run(root, "exec", "m0", "cat", "/var/lib/mysql/db1.ibd")
    assert code != 0  # gone with the container
    sim(root, "rm", "-f", "m0")
    args = ["run", "-d", "-p", "3306:3306", "--privileged=true",
            "-v", f"{tmp_path}/zzyyuse/mysql/log:/var/log/mysql",
            "-v", f"{data}:/var/lib/mysql",
            "-v", f"{tmp_path}/zzyyuse/mysql/conf:/etc/mysql/conf.d",
            "-e", "MYSQL_ROOT_PASSWORD=123456", "--name", "mysql", "mysql:5.7"]
    sim(root, *args)
    sim(root, "exec", "mysql", "sh", "-c", "echo row > /var/lib/mysql/db1.ibd")
    sim(root, "rm", "-f", "mysql")
    sim(root, *args)
    assert sim(root, "exec", "mysql", "cat", "/var/lib/mysql/db1.ibd") == "row\n"
    assert (data / "db1.ibd").read_text() == "row\n"


def test_lesson5_tomcat_webapps_fix_and_commit(tmp_path):
    root = tmp_path / "root"
    sim(root, "run", "-d", "-p", "8080:8080", "--name", "t1", "tomcat")
    assert sim(root, "exec", "t1", "ls", "/usr/local/tomcat/webapps") == ""
    sim(root, "exec", "t1", "sh", "-c",
        "cd /usr/local/tomcat && rm -r webapps && mv webapps.dist webapps")
    diff = sim(root, "diff", "t1").splitlines()
    assert "D /usr/local/tomcat/webapps.dist" in diff
    assert "A /usr/local/tomcat/webapps/ROOT/index.jsp" in diff or any(
        line.startswith("A /usr/local/tomcat/webapps/ROOT/") for line in diff)
    # only what changed was copied up: nothing from bin/ or lib/
    assert not any(line.split()[1].startswith(("/usr/local/tomcat/bin",
                                               "/usr/local/tomcat/lib")) for line in diff)
    sim(root, "commit", "-m=webapps fixed", "t1", "mytomcat:1.0")
    listing = sim(root, "run", "--rm", "mytomcat:1.0", "ls", "/usr/local/tomcat/webapps")
    assert "ROOT" in listing.split()
    listing = sim(root, "run", "--rm", "mytomcat:1.0", "ls", "/usr/local/tomcat")
    assert "webapps.dist" not in listing.split()
    # billygoo/tomcat8-jdk8 needs no fix
    sim(root, "run", "-d", "-p", "8081:8080", "--name", "mytomcat8", "billygoo/tomcat8-jdk8")
    out = sim(root, "exec", "mytomcat8", "sh", "-c", "ls /usr/local/tomcat/webapps")
    assert "ROOT" in out.split()


def test_lesson6_config_files_from_the_host(tmp_path):
    root = tmp_path / "root"
    app = tmp_path / "app" / "redis"
    app.mkdir(parents=True)
    (app / "redis.conf").write_text("appendonly yes\n")
    sim(root, "run", "-p", "6379:6379", "--name", "myr3", "--privileged=true",
        "-v", f"{app}/redis.conf:/etc/redis/redis.conf", "-v", f"{app}/data:/data",
        "-d", "redis:6.0.8", "redis-server", "/etc/redis/redis.conf")
    ps = sim(root, "ps")
    assert '"docker-entrypoint.s…"' in ps and "0.0.0.0:6379->6379/tcp" in ps
    assert sim(root, "exec", "myr3", "cat", "/etc/redis/redis.conf") == "appendonly yes\n"
    with open(app / "redis.conf", "a") as f:
        f.write("requirepass secret\n")
    assert sim(root, "exec", "myr3", "cat", "/etc/redis/redis.conf") == \
        "appendonly yes\nrequirepass secret\n"
    conf = tmp_path / "mysql" / "conf"
    conf.mkdir(parents=True)
    (conf / "my.cnf").write_text("[client]\ndefault_character_set=utf8mb4\n[mysqld]\n"
                                 "collation_server = utf8mb4_general_ci\n"
                                 "character_set_server = utf8mb4\n")
    sim(root, "run", "-d", "-p", "3306:3306", "-v", f"{conf}:/etc/mysql/conf.d",
        "-e", "MYSQL_ROOT_PASSWORD=123456", "--name", "mysql", "mysql:5.7")
    out = sim(root, "exec", "mysql", "cat", "/etc/mysql/conf.d/my.cnf")
    assert "character_set_server = utf8mb4" in out
    with open(conf / "my.cnf", "a") as f:
        f.write("max_connections = 50\n")
    assert "max_connections = 50" in sim(root, "exec", "mysql", "cat",
                                         "/etc/mysql/conf.d/my.cnf")
    # the bind hides the image's own conf.d content, as docker does
    assert sim(root, "exec", "mysql", "ls", "/etc/mysql/conf.d").split() == ["my.cnf"]


@pytest.mark.parametrize("port_taken", [False])
def test_lesson_registry_container_starts_the_server(tmp_path, port_taken):
    """`run -d -p P:5000 -v DIR:/tmp/registry registry` serves on 127.0.0.1:P into DIR;
    `rm -f` stops it."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "root"
    data = tmp_path / "myregistry"
    sim(root, "run", "-d", "-p", f"{port}:5000", "-v", f"{data}/:/tmp/registry",
        "--privileged=true", "--name", "reg", "registry")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/_catalog", timeout=10) as r:
            assert json.loads(r.read()) == {"repositories": []}
        assert f"0.0.0.0:{port}->5000/tcp" in sim(root, "ps")
    finally:
        sim(root, "rm", "-f", "reg")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/_catalog", timeout=2)
    assert data.is_dir()
