"""Differential test: each command line runs under the system's /bin/sh (with coreutils, C
locale) in one fresh directory and under the built-in shell on an identical directory; exit
status, stdout and stderr must be the same, byte for byte."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest
from test_shell import HostFS

from imagesim import shell

SETUP = "mkdir d e; echo hello > d/f; echo x > g; ln -s g link"

CASES = [
    "rm nosuch", "rm -r nosuch", "rm -f nosuch; echo $?", "rmdir nosuch", "rmdir d",
    "mkdir d", "mkdir a/b", "mkdir -p a/b/c && ls a/b", "cat nosuch", "cat d", "cat d/f g",
    "cp nosuch x", "cp d y", "cp g d && cat d/g", "cp -r d y && ls y", "cp g g",
    "mv nosuch x", "mv g h && ls", "mv g d && ls d", "mv d d/sub", "mv d e && ls e",
    "ls nosuch", "ls", "ls -a", "ls -A", "ls d e", "ls -d d", "ls -1 d g", "rm d",
    "rm -r d && ls", "rm -rf d e && ls", "rm . ", "rm -r .", "ln -s g d", "ln g d && ls d",
    "ln nosuch y", "chmod 777 nosuch", "chmod xyz g", "chmod 600 g && stat -c %a g",
    "chmod u+x,go= g && stat -c '%a %A' g", "cd nosuch", "cd g",
    "cd d && echo * && cd .. && echo *", "echo a > d", "echo a > nodir/f",
    "echo a >> nodir/f", "stat nosuch", "stat -c '%n %s %F' g d link", "find nosuch",
    "find . -name f", "find d", "find . -type d | sort", "find . | sort -r",
    "ls g d/f | sort -u", "find . -maxdepth 1 -type f",
    "rm -rf /", "ls -z", "rm -z x", "touch a/b/c", "cat < nosuch", "nosuchcmd", "exit 300",
    "false; echo $?", "echo -n x; echo y", "echo 'a b'  \"c  d\" e\\ f", "echo $NOPE.",
    "printf '%s-%d\\n' a 3 b 4", "printf '%5s|%-3s|\\n' ab c",
    "X=1; unset X; echo ${X:-u}", "echo $((3*4+1))", "test 1 -eq a", "[ a = a ] && echo y",
    "[ -d d ] && [ -f g ] && [ ! -e nope ] && echo all", "[ -L link ] && echo link",
    "wc -l < nosuch", "head -n 1 nosuch", "wc -l g d/f", "wc g", "cat d/f | wc -c",
    "grep -c hello d/f g", "grep hello d/f g", "grep -v x g; echo $?", "basename /a/b/c.txt .txt",
    "dirname /a/b/c", "echo *", "echo d/*", "echo nomatch*", "cd d; echo *; cd ..; echo *",
    "for i in 1 2 3; do echo $i; done", "if [ -f g ]; then echo file; else echo no; fi",
    "i=0; while [ $i -lt 3 ]; do i=$((i+1)); done; echo $i", "echo $(cat g)$(echo y)",
    "true && false || echo recovered", "! true; echo $?", "cat g d/f > out && cat out",
    "echo one >> g; echo two >> g; cat g", "cat nosuch 2>/dev/null; echo $?",
    "ls nosuch > /dev/null 2>&1; echo $?", "touch -c newfile; ls", "touch newfile; ls",
    "cat -n d/f g", "tail -n 1 g", "head -c 3 g 2>/dev/null || head -n 1 g",
    "readlink link", "readlink g; echo $?", "cp -a link l2 && readlink l2",
    "mkdir -p x/y && rmdir -p x/y && ls", "env -i FOO=1 env",
    "X=1; cat <<EOF\nvalue $X $(echo sub) \\$X\nEOF", "X=1; cat <<'EOF'\n$X\nEOF\necho after",
    "cat <<-EOF > out; cat out\n\tindented\n\tEOF", "wc -l <<EOF\na\nb\nEOF",
    "x=b.txt; case $x in a*) echo A;; *.txt|*.md) echo T;; esac",
    "case foo in\n  f?o) echo yes\n  ;;\n  *) echo no;;\nesac",
    "case x in y) echo no;; esac; echo $?",
    "for f in g d; do case $f in \"g\") echo quoted-g;; *) echo other;; esac; done",
    "x=1; (x=2; cd d; echo $x *); echo $x *; { x=3; echo $x; } > out; cat out",
    "greet() { echo \"hi $1\"; return 3; }; greet bob; echo $?", "(exit 4); echo $?",
    "f() {\n  echo in f\n}\nf; f", "return 5; echo no",
]


@pytest.fixture(scope="module")
def system_sh():
    path = shutil.which("sh")
    if path is None:
        pytest.skip("no /bin/sh to compare with")
    return path


@pytest.mark.parametrize("script", CASES)
def test_same_as_system_sh(script, tmp_path, system_sh):
    real_dir, ours_dir = tmp_path / "real", tmp_path / "ours"
    for d in (real_dir, ours_dir):
        d.mkdir()
        subprocess.run([system_sh, "-c", SETUP], cwd=d, check=True)
    env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    real = subprocess.run(["sh", "-c", script], executable=system_sh, cwd=real_dir,
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    out, err = io.StringIO(), io.StringIO()
    status = shell.run(HostFS(str(ours_dir)), argv=["sh", "-c", script], env={},
                       stdin=io.StringIO(), stdout=out, stderr=err, interactive=False)
    expected = (real.returncode, real.stdout.replace(str(real_dir), ""),
                real.stderr.replace(str(real_dir), ""))
    assert (status, out.getvalue(), err.getvalue()) == expected


BASH_CASES = [
    "nosuchcmd", "cd nosuch", "cd g", "cat < nosuch", "echo a > nodir/f", "test 1 -eq a",
    "rm nosuch", "mkdir d", "cp d y", "mv nosuch x", "ls nosuch", "echo -e 'a\\tb'",
    "echo 'a\\tb'", "exit 300", "false || echo $?", "for i in a b; do echo $i; done",
]


@pytest.mark.parametrize("script", BASH_CASES)
def test_same_as_bash(script, tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    real_dir, ours_dir = tmp_path / "real", tmp_path / "ours"
    for d in (real_dir, ours_dir):
        d.mkdir()
        subprocess.run([bash, "-c", SETUP], cwd=d, check=True)
    env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    real = subprocess.run(["bash", "-c", script], executable=bash, cwd=real_dir,
                          capture_output=True, text=True, env=env, timeout=30, check=False)
    out, err = io.StringIO(), io.StringIO()
    status = shell.run(HostFS(str(ours_dir)), argv=["bash", "-c", script], env={},
                       stdin=io.StringIO(), stdout=out, stderr=err, interactive=False)
    assert (status, out.getvalue(), err.getvalue()) == (real.returncode, real.stdout,
                                                         real.stderr)


@pytest.mark.parametrize("name", ["sh", "bash"])
def test_error_line_numbers(name, tmp_path):
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} is not installed")
    script = "true\n\nnosuch1\nif true; then\n  nosuch2\nfi\n"
    real = subprocess.run([name, "-c", script], executable=exe, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/bin")})
    err = io.StringIO()
    status = shell.run(HostFS(str(tmp_path)), argv=[name, "-c", script], env={},
                       stdin=io.StringIO(), stdout=io.StringIO(), stderr=err,
                       interactive=False)
    assert (status, err.getvalue()) == (real.returncode, real.stderr)
    # the same script fed on standard input counts lines the same way
    err = io.StringIO()
    shell.run(HostFS(str(tmp_path)), argv=[name], env={}, stdin=io.StringIO(script),
              stdout=io.StringIO(), stderr=err, interactive=False)
    real = subprocess.run([name], input=script, executable=exe, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False,
                          env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/bin")})
    assert err.getvalue() == real.stderr
