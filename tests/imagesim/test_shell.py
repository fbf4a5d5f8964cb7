"""The built-in shell on an os-shaped filesystem: a host-directory adapter (every test) and the
union engine over memory layers (when the engine is importable)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat

import pytest

from imagesim import shell
from imagesim.shell import ShellSyntaxError, parse, tokenize


class HostFS:
    """An os-shaped view of a host directory: union paths ``/a/b`` map to ``ROOT/a/b``.
    Symlinks in the tests are relative, so following them on the host stays inside ROOT."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _p(self, path: str) -> str:
        assert path.startswith("/"), path
        return os.path.join(self.root, path.lstrip("/"))

    def stat(self, p):
        return os.stat(self._p(p))

    def lstat(self, p):
        return os.lstat(self._p(p))

    def listdir(self, p):
        return os.listdir(self._p(p))

    def open(self, p, mode="rb"):
        return open(self._p(p), mode)

    def mkdir(self, p, mode=0o777):
        os.mkdir(self._p(p), mode)

    def rmdir(self, p):
        os.rmdir(self._p(p))

    def unlink(self, p):
        os.unlink(self._p(p))

    def rename(self, a, b):
        os.rename(self._p(a), self._p(b))

    def symlink(self, target, p):
        os.symlink(target, self._p(p))

    def readlink(self, p):
        return os.readlink(self._p(p))

    def link(self, a, b):
        os.link(self._p(a), self._p(b))

    def chmod(self, p, mode):
        os.chmod(self._p(p), mode)

    def utime(self, p, ns=None):
        os.utime(self._p(p), ns=ns)


def _union():
    union = pytest.importorskip("unionfs.union")
    layer = pytest.importorskip("unionfs.layer")
    lower = layer.MemoryLayer()
    for d in ("/bin", "/etc", "/root", "/tmp", "/usr", "/usr/bin", "/var", "/var/lib",
              "/var/lib/dpkg", "/srv", "/srv/webapps.dist", "/srv/webapps.dist/ROOT"):
        lower.mkdir(d, 0o755)
    for path, data in (("/etc/hostname", b"base\n"), ("/srv/webapps.dist/ROOT/index.jsp",
                                                       b"<h1>hi</h1>\n"),
                       ("/var/lib/dpkg/status", b"Package: base-files\nStatus: install ok "
                        b"installed\nVersion: 12\nArchitecture: amd64\nDescription: base\n")):
        with lower.open_write(path, create=True) as f:
            f.write(data)
    lower.mkdir("/srv/webapps", 0o755)
    for tool in ("apt-get", "dpkg"):   # the image's package tools, as ubuntu ships them
        with lower.open_write(f"/usr/bin/{tool}", create=True, mode=0o755) as f:
            f.write(b"\x7fELF stand-in\n")
    return union.UnionFS(lowers=[lower], upper=layer.MemoryLayer())


@pytest.fixture(params=["host", "union"])
def fs(request, tmp_path):
    if request.param == "host":
        for d in ("bin", "etc", "root", "tmp", "usr/bin", "var/lib/dpkg", "srv/webapps",
                  "srv/webapps.dist/ROOT"):
            os.makedirs(tmp_path / d, exist_ok=True)
        (tmp_path / "etc/hostname").write_text("base\n")
        (tmp_path / "srv/webapps.dist/ROOT/index.jsp").write_text("<h1>hi</h1>\n")
        (tmp_path / "var/lib/dpkg/status").write_text(
            "Package: base-files\nStatus: install ok installed\nVersion: 12\n"
            "Architecture: amd64\nDescription: base\n")
        for tool in ("apt-get", "dpkg"):
            (tmp_path / "usr/bin" / tool).write_bytes(b"\x7fELF stand-in\n")
            os.chmod(tmp_path / "usr/bin" / tool, 0o755)
        return HostFS(str(tmp_path))
    return _union()


def sh(fs, script, *, name="sh", stdin="", env=None, workdir="/"):
    out, err = io.StringIO(), io.StringIO()
    status = shell.run(fs, argv=[name, "-c", script], env=env or {}, workdir=workdir,
                       hostname="abc123", stdin=io.StringIO(stdin), stdout=out, stderr=err,
                       interactive=False)
    return status, out.getvalue(), err.getvalue()


def read(fs, path):
    with fs.open(path, "rb") as f:
        return f.read()


# --- parsing -----------------------------------------------------------------------------

def test_tokenize_quotes_and_operators():
    toks = tokenize("echo 'a b' \"c $X\" d\\ e && f 2>&1 >> out; g")
    words = [t for t in toks if isinstance(t, shell.Word)]
    assert ["".join(p.text for p in w.parts) for w in words] == \
        ["echo", "a b", "c $X", "d e", "f", "1", "out", "g"]
    ops = [t.value for t in toks if isinstance(t, shell.Op)]
    assert ops == ["&&", "2>&", ">>", ";"]


def test_unterminated_quote_is_incomplete():
    with pytest.raises(ShellSyntaxError) as e:
        parse("echo 'abc")
    assert e.value.incomplete
    with pytest.raises(ShellSyntaxError) as e:
        parse("true &&")
    assert e.value.incomplete
    with pytest.raises(ShellSyntaxError) as e:
        parse("; true")
    assert not e.value.incomplete


# --- the language ------------------------------------------------------------------------

def test_and_or_semicolon_and_status(fs):
    assert sh(fs, "false && echo no; echo $?")[1] == "1\n"
    assert sh(fs, "false || echo yes")[1] == "yes\n"
    assert sh(fs, "true && echo a || echo b")[1] == "a\n"
    assert sh(fs, "false; true")[0] == 0
    assert sh(fs, "true; false")[0] == 1
    assert sh(fs, "exit 3; echo unreachable") == (3, "", "")
    assert sh(fs, "! false")[0] == 0


def test_variables_quoting_and_env(fs):
    _, out, _ = sh(fs, 'X="a  b"; echo $X; echo "$X"; echo \'$X\'; echo ${Y:-dflt}',
                        env={"Y": ""})
    assert out == "a b\na  b\n$X\ndflt\n"
    assert sh(fs, "echo $GREETING", env={"GREETING": "hi there"})[1] == "hi there\n"
    assert sh(fs, "export A=1; env")[1].splitlines().count("A=1") == 1
    assert sh(fs, "B=2 env | grep ^B=")[1] == "B=2\n"
    assert sh(fs, "echo \"$HOME\"")[1] == "/root\n"


def test_command_not_found_and_syntax_error_statuses(fs):
    assert sh(fs, "nosuchcmd") == (127, "", "sh: 1: nosuchcmd: not found\n")
    assert sh(fs, "nosuchcmd", name="bash") == (127, "",
                                                 "bash: line 1: nosuchcmd: command not found\n")
    status, _, err = sh(fs, "echo 'open")
    assert status == 2 and "unterminated" in err


def test_workdir_cd_pwd(fs):
    assert sh(fs, "pwd", workdir="/srv")[1] == "/srv\n"
    assert sh(fs, "cd /etc && pwd && cd .. && pwd")[1] == "/etc\n/\n"
    status, _, err = sh(fs, "cd /nope")
    assert status == 2 and err == "sh: 1: cd: can't cd to /nope\n"
    status, _, err = sh(fs, "cd /nope", name="bash")
    assert status == 1 and err == "bash: line 1: cd: /nope: No such file or directory\n"


def test_redirections(fs):
    assert sh(fs, "echo one > /tmp/f; echo two >> /tmp/f; cat /tmp/f")[1] == "one\ntwo\n"
    assert read(fs, "/tmp/f") == b"one\ntwo\n"
    assert sh(fs, "echo three > /tmp/f")[0] == 0
    assert read(fs, "/tmp/f") == b"three\n"
    assert sh(fs, "cat < /tmp/f")[1] == "three\n"
    status, out, err = sh(fs, "cat /nope 2> /tmp/err; cat /tmp/err")
    assert out == "cat: /nope: No such file or directory\n" and err == ""
    assert sh(fs, "cat /nope > /tmp/both 2>&1; cat /tmp/both")[1] == \
        "cat: /nope: No such file or directory\n"
    status, _, err = sh(fs, "echo x > /nodir/f")
    assert (status, err) == (2, "sh: 1: cannot create /nodir/f: Directory nonexistent\n")


def test_pipes_and_globs(fs):
    sh(fs, "touch /tmp/a.txt /tmp/b.txt /tmp/c.log")
    assert sh(fs, "echo /tmp/*.txt")[1] == "/tmp/a.txt /tmp/b.txt\n"
    assert sh(fs, "cd /tmp && echo *.log")[1] == "c.log\n"
    assert sh(fs, "echo '/tmp/*.txt'")[1] == "/tmp/*.txt\n"
    assert sh(fs, "echo /tmp/*.none")[1] == "/tmp/*.none\n"
    assert sh(fs, "ls /tmp | wc -l")[1].strip() == "3"


# --- file commands: results and the exact error words --------------------------------------

def test_rm_messages_and_statuses(fs):
    assert sh(fs, "rm x") == (1, "", "rm: cannot remove 'x': No such file or directory\n")
    assert sh(fs, "rm -f x") == (0, "", "")
    assert sh(fs, "rm /srv") == (1, "", "rm: cannot remove '/srv': Is a directory\n")
    status, _, err = sh(fs, "rm -rf /")
    assert status == 1 and "dangerous to operate recursively on '/'" in err
    assert sh(fs, "rm -r /srv/webapps.dist && ls /srv")[1] == "webapps\n"


def test_tomcat_fix_as_written(fs):
    status, out, err = sh(fs, "cd /srv && rm -r webapps && mv webapps.dist webapps && "
                              "ls webapps && cat webapps/ROOT/index.jsp && ls")
    assert (status, err) == (0, "")
    assert out == "ROOT\n<h1>hi</h1>\nwebapps\n"


def test_mkdir_touch_cp_mv_ln(fs):
    assert sh(fs, "mkdir /a") == (0, "", "")
    assert sh(fs, "mkdir /a") == (1, "", "mkdir: cannot create directory '/a': File exists\n")
    assert sh(fs, "mkdir /x/y")[2] == \
        "mkdir: cannot create directory '/x/y': No such file or directory\n"
    assert sh(fs, "mkdir -p /x/y/z && ls /x/y")[1] == "z\n"
    assert sh(fs, "touch /a/f && echo hi > /a/g && cp /a/g /a/h && cat /a/h")[1] == "hi\n"
    assert sh(fs, "cp /a /b")[2] == "cp: -r not specified; omitting directory '/a'\n"
    assert sh(fs, "cp -r /a /b && ls /b")[1] == "f\ng\nh\n"
    assert sh(fs, "cp /nope /b")[2] == "cp: cannot stat '/nope': No such file or directory\n"
    assert sh(fs, "mv /b/h /b/i && ls /b")[1] == "f\ng\ni\n"
    assert sh(fs, "mv /nope /b")[2] == "mv: cannot stat '/nope': No such file or directory\n"
    assert sh(fs, "cd /b && ln -s g link && cat link && ls -l link")[1].startswith("hi\nl")
    assert fs.readlink("/b/link") == "g"
    assert sh(fs, "ln /b/g /b/hard && stat -c %h /b/g")[1] == "2\n"
    assert sh(fs, "rmdir /a")[2] == "rmdir: failed to remove '/a': Directory not empty\n"


def test_chmod_stat_ls_long(fs):
    sh(fs, "echo x > /tmp/s")
    assert sh(fs, "chmod 750 /tmp/s && stat -c '%a %A %s' /tmp/s")[1] == "750 -rwxr-x--- 2\n"
    assert sh(fs, "chmod u-x,o+r /tmp/s && stat -c %a /tmp/s")[1] == "654\n"
    assert sh(fs, "chmod zz /tmp/s")[2].startswith("chmod: invalid mode: 'zz'")
    assert stat.S_IMODE(fs.stat("/tmp/s").st_mode) == 0o654
    out = sh(fs, "ls -la /tmp")[1].splitlines()
    assert out[0].startswith("total ")
    assert out[1].endswith(" .") and out[2].endswith(" ..")
    assert out[3].split()[:5] == ["-rw-r-xr--", "1", "root", "root", "2"]
    assert out[3].endswith(" s")
    full = sh(fs, "stat /tmp/s")[1]
    assert "  File: '/tmp/s'" in full and "regular file" in full and "(0654/-rw-r-xr--)" in full
    assert sh(fs, "ls /nope") == (2, "", "ls: cannot access '/nope': No such file or directory\n")


def test_find_du_which(fs):
    sh(fs, "mkdir -p /w/d && echo 12345 > /w/d/f && echo x > /w/g")
    assert sh(fs, "find /w")[1] == "/w\n/w/d\n/w/d/f\n/w/g\n"
    assert sh(fs, "find /w -type f -name 'f*'")[1] == "/w/d/f\n"
    assert sh(fs, "cd /w && find . -maxdepth 1 -type d")[1] == ".\n./d\n"
    out = sh(fs, "du /w")[1].splitlines()
    assert [line.split("\t")[1] for line in out] == ["/w/d", "/w"]
    assert int(out[1].split("\t")[0]) >= int(out[0].split("\t")[0])
    assert sh(fs, "du -s /w")[1].endswith("\t/w\n")
    assert sh(fs, "which ls") == (1, "", "")


def test_scripts_from_path_run_and_binaries_do_not(fs):
    sh(fs, "mkdir -p /usr/local/bin")
    with fs.open("/usr/local/bin/hello", "wb") as f:
        f.write(b"#!/bin/sh\necho hello $1\nexit 4\n")
    fs.chmod("/usr/local/bin/hello", 0o755)
    assert sh(fs, "hello world") == (4, "hello world\n", "")
    with fs.open("/bin/fake", "wb") as f:
        f.write(b"\x7fELF\x02\x01")
    fs.chmod("/bin/fake", 0o755)
    status, _, err = sh(fs, "fake")
    assert status == 126 and "imagesim runs no programs" in err


# --- the package manager ------------------------------------------------------------------

def test_install_needs_update_then_works(fs):
    status, _, err = sh(fs, "apt-get -y install vim")
    assert status == 100 and err == "E: Unable to locate package vim\n"
    status, out, err = sh(fs, "apt-get update && apt-get -y install vim")
    assert status == 0, err
    assert "Setting up vim (2:8.1.2269-1ubuntu5.23) ..." in out
    assert sh(fs, "which vim.basic")[1] == "/usr/bin/vim.basic\n"
    assert sh(fs, "vim.basic")[1].startswith("VIM - Vi IMproved")
    listing = sh(fs, "dpkg -l")[1]
    assert "ii  vim " in listing and "ii  base-files " in listing and "ii  xxd " in listing
    assert b"Package: vim\n" in read(fs, "/var/lib/dpkg/status")
    assert sh(fs, "ls /usr/share/doc/vim")[1] == "changelog.Debian\ncopyright\n"
    status, out, _ = sh(fs, "apt-get -y remove vim && dpkg -l vim")
    assert status == 1 and "Removing vim" in out
    assert sh(fs, "ls /usr/bin/vim.basic")[0] == 2


def test_install_unknown_and_tree(fs):
    sh(fs, "apt-get update")
    assert sh(fs, "apt-get -y install nosuchpkg")[2] == "E: Unable to locate package nosuchpkg\n"
    assert sh(fs, "tree /srv")[0] == 127
    assert sh(fs, "apt-get -y install tree")[0] == 0
    status, out, _ = sh(fs, "tree /srv")
    assert status == 0
    assert out.splitlines()[:3] == ["/srv", "├── webapps", "└── webapps.dist"]
    assert out.endswith("3 directories, 1 file\n")


def test_install_without_yes_asks(fs):
    sh(fs, "apt-get update")
    out, err = io.StringIO(), io.StringIO()
    status = shell.run(fs, argv=["sh"], env={}, stdin=io.StringIO("apt-get install curl\nn\n"),
                       stdout=out, stderr=err, interactive=False)
    assert status == 1 and "Do you want to continue? [Y/n] Abort." in out.getvalue()
    assert sh(fs, "which curl")[0] == 1


# --- forms of invocation ------------------------------------------------------------------

def test_script_on_stdin_and_interactive_prompt(fs):
    out, err = io.StringIO(), io.StringIO()
    status = shell.run(fs, argv=["/bin/bash"], env={},
                       stdin=io.StringIO("cd /etc\necho 'multi\nline'\ncat hostname\nexit 5\n"),
                       stdout=out, stderr=err, interactive=True, hostname="3f2a1b4c5d6e")
    assert status == 5
    assert out.getvalue() == "multi\nline\nbase\n"
    assert err.getvalue().startswith("root@3f2a1b4c5d6e:/# root@3f2a1b4c5d6e:/etc# > ")


def test_single_command_argv(fs):
    out, err = io.StringIO(), io.StringIO()
    assert shell.run(fs, argv=["cat", "/etc/hostname"], stdout=out, stderr=err,
                     stdin=io.StringIO()) == 0
    assert out.getvalue() == "base\n"
    assert shell.run(fs, argv=["nosuch"], stdout=out, stderr=err, stdin=io.StringIO()) == 127
    assert shell.is_shell(["/bin/bash"]) and not shell.is_shell(["ls"])


def test_lower_layer_untouched_by_shell_on_union():
    fs = _union()
    lower = fs.lowers[0] if hasattr(fs, "lowers") else None
    before = lower.lookup("/etc/hostname") if lower is not None else None
    assert sh(fs, "echo changed > /etc/hostname && rm -r /srv/webapps.dist")[0] == 0
    assert read(fs, "/etc/hostname") == b"changed\n"
    with pytest.raises(FileNotFoundError) as e:
        fs.lstat("/srv/webapps.dist")
    assert e.value.errno == errno.ENOENT
    if lower is not None:
        assert lower.lookup("/etc/hostname") == before
        assert lower.lookup("/srv/webapps.dist/ROOT/index.jsp") is not None


def test_vim_alternatives_on_union():
    # absolute symlinks (/usr/bin/vim -> /etc/alternatives/vim -> /usr/bin/vim.basic) resolve
    # inside the union, so `which vim` and `vim` work as on Ubuntu
    fs = _union()
    status, out, err = sh(fs, "apt-get update >/dev/null; apt-get -y install vim > /tmp/log "
                              "&& which vim && vim && readlink /usr/bin/vim")
    assert (status, err) == (0, "")
    assert out.splitlines()[:3] == ["/usr/bin/vim", "VIM - Vi IMproved 8.1 (2018 May 18) "
                                                    "[simulated by imagesim]",
                                    "No editor runs in this shell. Write files with: "
                                    "echo TEXT > FILE"]
    assert out.splitlines()[3] == "/etc/alternatives/vim"
    assert sh(fs, "readlink -f /usr/bin/vi")[1] == "/usr/bin/vim.basic\n"
    assert sh(fs, "cat /etc/hostname > /dev/null && cat < /dev/null")[:2] == (0, "")
    assert fs.readlink("/usr/bin/vim") == "/etc/alternatives/vim"


def test_if_for_while_and_loop_control(fs):
    script = """
for f in /etc/hostname /nope; do
    if [ -f "$f" ]; then echo "$f is a file"
    elif [ -d "$f" ]; then echo dir
    else echo "$f is missing"; fi
done
i=0
while [ $i -lt 5 ]; do
    i=$(printf x)
    break
done
n=0
for x in a b c d; do
    if [ $x = b ]; then continue; fi
    if [ $x = d ]; then break; fi
    echo -n $x
done
echo
until true; do echo never; done
if false; then echo no; fi > /tmp/out; cat /tmp/out
"""
    status, out, err = sh(fs, script)
    assert err == "" and status == 0
    assert out == "/etc/hostname is a file\n/nope is missing\nac\n"
    with pytest.raises(ShellSyntaxError) as e:
        parse("if true; then echo x")
    assert e.value.incomplete
    with pytest.raises(ShellSyntaxError) as e:
        parse("then echo")
    assert not e.value.incomplete and "`then'" in str(e.value)
    # a loop on stdin is read until `done`
    out = io.StringIO()
    assert shell.run(fs, argv=["sh"], stdin=io.StringIO("for a in 1 2\ndo\necho $a\ndone\n"),
                     stdout=out, stderr=io.StringIO(), interactive=False) == 0
    assert out.getvalue() == "1\n2\n"


def test_command_substitution_and_arithmetic(fs):
    assert sh(fs, 'echo "host: $(cat /etc/hostname)"')[1] == "host: base\n"
    assert sh(fs, "echo `echo a` $(echo b $(echo c))")[1] == "a b c\n"
    assert sh(fs, "i=0; while [ $i -lt 3 ]; do i=$((i + 1)); done; echo $i $((7 % 4 * 2))")[1] \
        == "3 6\n"
    status, _, err = sh(fs, "echo $((1 / 0))")
    assert status == 1 and "division by zero" in err
    assert sh(fs, 'for f in $(ls /srv); do echo "[$f]"; done')[1] == \
        "[webapps]\n[webapps.dist]\n"


def test_read_loop_and_runaway_guard(fs):
    status, out, _ = sh(fs, 'printf "a b\\nc d\\n" > /tmp/in; while read x y; do echo "$y-$x"; '
                            'done < /tmp/in')
    assert (status, out) == (0, "b-a\nd-c\n")
    status, _, err = sh(fs, "while :; do :; done")
    assert status == 1 and "loop stopped after" in err


def test_chown_and_names_from_the_containers_passwd():
    fs = _union()
    with fs.open("/etc/passwd", "wb") as f:
        f.write(b"root:x:0:0:root:/root:/bin/bash\nmysql:x:999:999::/nonexistent:/bin/false\n")
    with fs.open("/etc/group", "wb") as f:
        f.write(b"root:x:0:\nmysql:x:999:\n")
    status, out, err = sh(fs, "touch /tmp/db && chown mysql:mysql /tmp/db && "
                              "stat -c '%u %g %U %G' /tmp/db && ls -l /tmp/db")
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == "999 999 mysql mysql"
    assert out.splitlines()[1].split()[2:4] == ["mysql", "mysql"]
    assert fs.stat("/tmp/db").st_uid == 999
    assert sh(fs, "chown nobody /tmp/db") == (1, "", "chown: invalid user: 'nobody'\n")
    assert sh(fs, "chown 5 /nope")[2] == \
        "chown: cannot access '/nope': No such file or directory\n"


def test_a_closed_pipe_ends_the_shell_quietly(fs):
    # a real pipe whose reader has gone, as with `imagesim exec c ls | head -1`
    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w", buffering=1)
    err = io.StringIO()
    try:
        status = shell.run(fs, argv=["sh", "-c", "ls /; echo more; echo more"], stdout=out,
                           stderr=err, stdin=io.StringIO(), interactive=False)
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()
    assert status == 141 and err.getvalue() == ""


def test_no_apt_get_in_an_image_without_it(tmp_path):
    fs = HostFS(str(tmp_path))       # an empty root, like FROM scratch or alpine
    assert sh(fs, "apt-get update") == (127, "", "sh: 1: apt-get: not found\n")
    assert sh(fs, "dpkg -l")[0] == 127


def test_here_document_and_case_typed_line_by_line(fs):
    # the mysql lesson's my.cnf, written the way a learner types it into the container
    script = ("cat > /etc/my.cnf <<EOF\n[client]\ndefault_character_set=utf8\n"
              "[mysqld]\ncharacter_set_server=$CHARSET\nEOF\n"
              "case $(head -n 1 /etc/my.cnf) in\n  '[client]') echo client first;;\n"
              "  *) echo other;;\nesac\n")
    out, err = io.StringIO(), io.StringIO()
    assert shell.run(fs, argv=["sh"], env={"CHARSET": "utf8"}, stdin=io.StringIO(script),
                     stdout=out, stderr=err, interactive=False) == 0
    assert (out.getvalue(), err.getvalue()) == ("client first\n", "")
    assert read(fs, "/etc/my.cnf") == (b"[client]\ndefault_character_set=utf8\n[mysqld]\n"
                                       b"character_set_server=utf8\n")
