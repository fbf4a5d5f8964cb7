"""The built-in shell: a small POSIX-ish shell that works in-process on a container's files.

No binary runs and no root is needed: every command is a Python function over an
*os-shaped* filesystem object (``UnionFS``, a container's ``MountTable``, or any object with
``os``'s method names and ``OSError`` failures), so what ``rm``, ``mv`` or ``apt-get`` do
turns into the engine's copy-ups and whiteouts, which ``trace=True`` prints as they happen.

Entry point (the container helper calls it for ``run -it IMAGE sh|bash|/bin/sh|/bin/bash``
and for ``exec``)::

    status = run(fs, argv=["sh", "-c", "apt-get update && apt-get -y install vim"],
                 env={"PATH": "/usr/bin:/bin"}, workdir="/", hostname="3f2a1b4c5d6e",
                 stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr,
                 interactive=None, trace=False)

``argv`` is the container command: a shell (``sh``, ``bash``, ``/bin/sh``, ``/bin/bash``)
with ``-c CMDS`` or a script path, or with no arguments reading commands from ``stdin``
(with the prompt ``root@HOSTNAME:/# `` when ``interactive``, which defaults to
``stdin.isatty()``); any other ``argv`` runs as one command (``["ls", "-la", "/"]``).
The return value is the exit status a shell would give (127 command not found, 126 not
executable, 2 syntax error, else the last command's status).

Language: simple commands, ``;``, newlines, ``&&``, ``||``, ``|`` (output of one command fed
to the next), ``!``, ``if/then/elif/else/fi``, ``for NAME in ...; do ...; done``, ``while``
and ``until`` loops with ``break``/``continue``, ``case ... esac``, here-documents
(``<<EOF``, ``<<'EOF'``, ``<<-EOF``), single and double quotes, backslash escapes, ``$VAR``,
``${VAR}``, ``${VAR:-default}`` (also ``:=``, ``:+``, ``:?``, ``${#VAR}``), ``$?``, ``$#``,
``$@``, ``$1``..., ``$(command)`` and backquotes, ``$((arithmetic))``, ``NAME=value``
assignments (before a command: its environment only), redirections ``>``, ``>>``, ``<``,
``2>``, ``2>&1``, ``&>`` (``/dev/null`` works in any image), ``# comments``, and
``*``/``?``/``[...]`` globs, ``{ LIST; }`` and ``( LIST )`` (a subshell), functions
(``name() { ...; }`` with ``return``). ``&`` runs the command in the foreground: nothing
runs concurrently here.

Commands: ``ls cat echo printf touch mkdir rm rmdir cp mv ln readlink chmod chown stat find
du cd pwd exit env printenv export unset set shift read true false : which type test [
head tail wc grep sort basename dirname hostname whoami id uname sleep clear sh bash . source
break continue return``, and the image's package tools on the offline catalog of
``imagesim.packages``: ``apt-get``, ``apt``, ``dpkg`` (images that have them, like ubuntu)
and ``apk`` (Alpine images). Files in ``$PATH`` that are ``#!/bin/sh`` scripts (the catalog's
programs) run in this shell; other files there are images' stand-ins for binaries and fail
with status 126. Messages and statuses are those of dash (``sh``) or bash (``bash``) and GNU
coreutils in the C locale (``rm: cannot remove 'x': No such file or directory``);
``tests/imagesim/test_shell_posix.py`` compares them byte for byte with the real tools.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import io
import os
import posixpath
import re
import stat as _stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import packages

SHELL_NAMES = frozenset({"sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash",
                         "dash", "/bin/dash", "ash", "/bin/ash"})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CHUNK = 1 << 20


def is_shell(argv: Sequence[str]) -> bool:
    """True when ``argv`` starts one of the names that open the built-in shell."""
    return bool(argv) and argv[0] in SHELL_NAMES


# ============================================================================================
# lexing and parsing
# ============================================================================================

class ShellSyntaxError(Exception):
    """A command line that cannot be parsed (unterminated quote, dangling operator)."""

    def __init__(self, message: str, incomplete: bool = False) -> None:
        super().__init__(message)
        self.incomplete = incomplete


@dataclass(frozen=True)
class Part:
    """A piece of a word: ``kind`` is ``bare`` (expanded, split, globbed), ``double``
    (expanded only) or ``single`` (literal)."""

    text: str
    kind: str


@dataclass(frozen=True)
class Word:
    parts: tuple[Part, ...]
    line: int = field(default=1, compare=False)   # 1-based line of the text it came from


@dataclass(frozen=True)
class Op:
    value: str  # ; && || | ! newline, or a redirection: > >> < >& &>


@dataclass
class Redirect:
    fd: int
    op: str          # ">", ">>", "<", ">&", "&>"
    target: Word


@dataclass
class Command:
    assigns: list[tuple[str, Word]] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    redirects: list[Redirect] = field(default_factory=list)
    line: int = 1


@dataclass
class Pipeline:
    commands: list[Command]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _scan_paren(src: str, i: int) -> int:
    """``src[i]`` is ``(``: the index just after its matching ``)``, skipping quoted text.
    Raises ``ShellSyntaxError`` (incomplete) when it is not closed."""
    depth, j, n = 0, i, len(src)
    while j < n:
        c = src[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            k = src.find("'", j + 1)
            if k < 0:
                break
            j = k + 1
            continue
        if c == '"':
            k = j + 1
            while k < n and src[k] != '"':
                k += 2 if src[k] == "\\" else 1
            if k >= n:
                break
            j = k + 1
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    raise ShellSyntaxError("unterminated $( substitution", incomplete=True)


def tokenize(src: str) -> list[Word | Op]:
    """Split ``src`` into words and operators. Raises ``ShellSyntaxError`` (``incomplete``
    set when more input could finish it: an open quote or a trailing backslash)."""
    toks: list[Word | Op] = []
    parts: list[Part] = []
    bare: list[str] = []
    in_word = False
    i, n = 0, len(src)
    word_start = 0
    heredocs: list[tuple[int, str, bool, bool]] = []   # (token index, delimiter, quoted, -)

    def flush_bare() -> None:
        if bare:
            parts.append(Part("".join(bare), "bare"))
            bare.clear()

    def end_word() -> None:
        nonlocal in_word
        flush_bare()
        if in_word:
            toks.append(Word(tuple(parts), src.count("\n", 0, word_start) + 1))
        parts.clear()
        in_word = False

    while i < n:
        c = src[i]
        if not in_word:
            word_start = i
        if c in " \t":
            end_word()
            i += 1
        elif c == "#" and not in_word:
            while i < n and src[i] != "\n":
                i += 1
        elif c == "\n":
            end_word()
            toks.append(Op("\n"))
            i += 1
            while heredocs:
                idx, delim, quoted, strip_tabs = heredocs.pop(0)
                body: list[str] = []
                while True:
                    if i >= n:
                        raise ShellSyntaxError(f"here-document delimited by end-of-file "
                                               f"(wanted `{delim}')", incomplete=True)
                    k = src.find("\n", i)
                    k = n if k < 0 else k
                    line = src[i:k]
                    i = k + 1
                    if strip_tabs:
                        line = line.lstrip("\t")
                    if line == delim:
                        break
                    body.append(line + "\n")
                text = "".join(body)
                toks[idx] = Word((Part(text, "single" if quoted else "heredoc"),))
        elif c == "$" and src[i + 1:i + 2] == "(":
            j = _scan_paren(src, i + 1)
            bare.append(src[i:j])
            in_word = True
            i = j
        elif c == "`":
            j = src.find("`", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated `...` substitution", incomplete=True)
            bare.append("$(" + src[i + 1:j] + ")")
            in_word = True
            i = j + 1
        elif c == "\\":
            if i + 1 >= n:
                raise ShellSyntaxError("unexpected end of input after \\", incomplete=True)
            if src[i + 1] == "\n":
                i += 2
                continue
            flush_bare()
            parts.append(Part(src[i + 1], "single"))
            in_word = True
            i += 2
        elif c == "'":
            j = src.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated quoted string", incomplete=True)
            flush_bare()
            parts.append(Part(src[i + 1:j], "single"))
            in_word = True
            i = j + 1
        elif c == '"':
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise ShellSyntaxError("unterminated quoted string", incomplete=True)
                if src[j] == "\\" and j + 1 < n and src[j + 1] in '"\\$`\n':
                    if src[j + 1] != "\n":
                        # keep the escape visible to the expander as a literal marker
                        buf.append("\\" + src[j + 1] if src[j + 1] == "$" else src[j + 1])
                    j += 2
                    continue
                if src[j] == '"':
                    break
                if src[j] == "$" and src[j + 1:j + 2] == "(":
                    k = _scan_paren(src, j + 1)
                    buf.append(src[j:k])
                    j = k
                    continue
                if src[j] == "`":
                    k = src.find("`", j + 1)
                    if k < 0:
                        raise ShellSyntaxError("unterminated `...` substitution",
                                               incomplete=True)
                    buf.append("$(" + src[j + 1:k] + ")")
                    j = k + 1
                    continue
                buf.append(src[j])
                j += 1
            flush_bare()
            parts.append(Part("".join(buf), "double"))
            in_word = True
            i = j + 1
        elif c in ";&|<>()":
            two = src[i:i + 2]
            if c in "<>" and in_word and not parts and bare and "".join(bare).isdigit():
                fd = "".join(bare)
                bare.clear()
                in_word = False
            else:
                fd = ""
                end_word()
            if two == "<<":
                # a here-document: the body is read from the lines after this one
                i += 2
                strip_tabs = src[i:i + 1] == "-"
                if strip_tabs:
                    i += 1
                while i < n and src[i] in " \t":
                    i += 1
                j = i
                while j < n and src[j] not in " \t\n;&|<>()":
                    j += 1
                raw = src[i:j]
                if not raw:
                    raise ShellSyntaxError("syntax error near unexpected token `newline'")
                delim = raw.replace("'", "").replace('"', "").replace("\\", "")
                toks.append(Op(fd + "<<"))
                toks.append(Word(()))   # replaced by the body at the end of the line
                heredocs.append((len(toks) - 1, delim, raw != delim, strip_tabs))
                i = j
                continue
            if two in ("&&", "||", ">>", ">&", "&>", ";;"):
                op, i = two, i + 2
                if op == "&>" and src[i:i + 1] == ">":
                    op, i = "&>", i + 1  # &>> treated as &>
            else:
                op, i = c, i + 1
            toks.append(Op(fd + op))
        else:
            bare.append(c)
            in_word = True
            i += 1
    end_word()
    if heredocs:
        raise ShellSyntaxError(f"here-document delimited by end-of-file (wanted "
                               f"`{heredocs[0][1]}')", incomplete=True)
    return toks


@dataclass
class If:
    """``if LIST; then LIST; [elif LIST; then LIST;]... [else LIST;] fi``"""

    branches: list[tuple[list[AndOr], list[AndOr]]]
    orelse: list[AndOr] | None
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class For:
    """``for NAME [in WORDS]; do LIST; done`` (no ``in``: the positional parameters)."""

    name: str
    words: list[Word] | None
    body: list[AndOr]
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class While:
    """``while LIST; do LIST; done`` (``until`` when ``until`` is set)."""

    cond: list[AndOr]
    body: list[AndOr]
    until: bool = False
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class Case:
    """``case WORD in PATTERN[|PATTERN]) LIST ;; ... esac``"""

    subject: Word
    arms: list[tuple[list[Word], list[AndOr]]]
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class Group:
    """``{ LIST; }`` (this shell) or ``( LIST )`` (a subshell: changes stay inside)."""

    body: list[AndOr]
    subshell: bool
    redirects: list[Redirect] = field(default_factory=list)


@dataclass
class FuncDef:
    """``NAME() { LIST; }``: defines a function, runs nothing."""

    name: str
    body: Any


_RESERVED = frozenset({"if", "then", "elif", "else", "fi", "for", "in", "do", "done",
                       "while", "until", "!", "{", "}", "case", "esac"})
_REDIRECT_RE = re.compile(r"(\d*)(<<|>>|>&|>|<|&>)")


class _Parser:
    def __init__(self, toks: list[Word | Op]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> Word | Op | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    @staticmethod
    def is_op(t: object, *values: str) -> bool:
        return isinstance(t, Op) and t.value in values

    @staticmethod
    def reserved(t: object) -> str | None:
        """The reserved word ``t`` is, when it is one written plainly (no quotes)."""
        if isinstance(t, Word) and len(t.parts) == 1 and t.parts[0].kind == "bare" and \
                t.parts[0].text in _RESERVED:
            return t.parts[0].text
        return None

    def fail(self, t: object) -> ShellSyntaxError:
        if t is None:
            return ShellSyntaxError("syntax error: unexpected end of file", incomplete=True)
        name = "newline" if self.is_op(t, "\n") else _literal(t) if isinstance(t, Word) \
            else getattr(t, "value", "?")
        return ShellSyntaxError(f"syntax error near unexpected token `{name}'")

    def skip_newlines(self) -> None:
        while self.is_op(self.peek(), "\n"):
            self.pos += 1

    def expect(self, word: str) -> None:
        self.skip_newlines()
        t = self.peek()
        if self.reserved(t) != word:
            raise self.fail(t)
        self.pos += 1

    def parse_list(self, stops: frozenset[str] = frozenset(),
                   stop_ops: frozenset[str] = frozenset()) -> list[AndOr]:
        items: list[AndOr] = []
        while True:
            self.skip_newlines()
            t = self.peek()
            if t is None or (self.reserved(t) in stops and self.reserved(t) is not None):
                return items
            if isinstance(t, Op) and t.value in stop_ops:
                return items
            if self.is_op(t, ";;") and "esac" in stops:
                return items
            if self.is_op(t, ";", "&"):
                raise self.fail(t)
            items.append(self.and_or())
            t = self.peek()
            if self.is_op(t, ";;") and "esac" in stops:
                return items
            if self.is_op(t, ";", "&", "\n"):
                self.pos += 1
                if self.is_op(self.peek(), ";", "&"):
                    raise self.fail(self.peek())
                continue
            if t is None or (self.reserved(t) in stops and self.reserved(t) is not None):
                return items
            if isinstance(t, Op) and t.value in stop_ops:
                return items
            raise self.fail(t)

    def and_or(self) -> AndOr:
        first = self.pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while self.is_op(self.peek(), "&&", "||"):
            op = self.toks[self.pos].value  # type: ignore[union-attr]
            self.pos += 1
            self.skip_newlines()
            if self.peek() is None:
                raise ShellSyntaxError(f"syntax error: unexpected end after `{op}'",
                                       incomplete=True)
            rest.append((op, self.pipeline()))
        return AndOr(first, rest)

    def pipeline(self) -> Pipeline:
        negate = False
        if self.reserved(self.peek()) == "!":
            negate = True
            self.pos += 1
        cmds = [self.command()]
        while self.is_op(self.peek(), "|"):
            self.pos += 1
            self.skip_newlines()
            if self.peek() is None:
                raise ShellSyntaxError("syntax error: unexpected end after `|'",
                                       incomplete=True)
            cmds.append(self.command())
        return Pipeline(cmds, negate)  # type: ignore[arg-type]

    def redirects(self) -> list[Redirect]:
        out = []
        while True:
            t = self.peek()
            m = _REDIRECT_RE.fullmatch(t.value) if isinstance(t, Op) else None
            if not m:
                return out
            self.pos += 1
            target = self.peek()
            if not isinstance(target, Word):
                raise self.fail(target)
            self.pos += 1
            op = m.group(2)
            fd = int(m.group(1)) if m.group(1) else (0 if op in ("<", "<<") else 1)
            out.append(Redirect(fd, op, target))

    def command(self) -> Any:
        word = self.reserved(self.peek())
        if word == "if":
            self.pos += 1
            branches = []
            cond = self.parse_list(frozenset({"then"}))
            self.expect("then")
            body = self.parse_list(frozenset({"elif", "else", "fi"}))
            branches.append((cond, body))
            orelse = None
            while True:
                self.skip_newlines()
                w = self.reserved(self.peek())
                if w == "elif":
                    self.pos += 1
                    cond = self.parse_list(frozenset({"then"}))
                    self.expect("then")
                    branches.append((cond, self.parse_list(frozenset({"elif", "else",
                                                                      "fi"}))))
                elif w == "else":
                    self.pos += 1
                    orelse = self.parse_list(frozenset({"fi"}))
                else:
                    break
            self.expect("fi")
            return If(branches, orelse, self.redirects())
        if word == "for":
            self.pos += 1
            t = self.peek()
            if not isinstance(t, Word) or not _NAME_RE.fullmatch(_literal(t) or ""):
                raise self.fail(t)
            name = _literal(t) or ""
            self.pos += 1
            words: list[Word] | None = None
            self.skip_newlines()
            if self.reserved(self.peek()) == "in":
                self.pos += 1
                words = []
                while isinstance(self.peek(), Word):
                    words.append(self.peek())  # type: ignore[arg-type]
                    self.pos += 1
            if self.is_op(self.peek(), ";"):
                self.pos += 1
            self.expect("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect("done")
            return For(name, words, body, self.redirects())
        if word in ("while", "until"):
            self.pos += 1
            cond = self.parse_list(frozenset({"do"}))
            self.expect("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect("done")
            return While(cond, body, word == "until", self.redirects())
        if word in ("then", "elif", "else", "fi", "do", "done", "in", "}", "esac"):
            raise self.fail(self.peek())
        if word == "case":
            self.pos += 1
            subject = self.peek()
            if not isinstance(subject, Word):
                raise self.fail(subject)
            self.pos += 1
            self.expect("in")
            arms: list[tuple[list[Word], list[AndOr]]] = []
            while True:
                self.skip_newlines()
                t = self.peek()
                if self.reserved(t) == "esac":
                    self.pos += 1
                    break
                if t is None:
                    raise self.fail(t)
                if self.is_op(t, "("):
                    self.pos += 1
                patterns: list[Word] = []
                while True:
                    t = self.peek()
                    if not isinstance(t, Word):
                        raise self.fail(t)
                    patterns.append(t)
                    self.pos += 1
                    if self.is_op(self.peek(), "|"):
                        self.pos += 1
                        continue
                    break
                if not self.is_op(self.peek(), ")"):
                    raise self.fail(self.peek())
                self.pos += 1
                body = self.parse_list(frozenset({"esac"}))
                arms.append((patterns, body))
                if self.is_op(self.peek(), ";;"):
                    self.pos += 1
            return Case(subject, arms, self.redirects())
        if word == "{":
            self.pos += 1
            body = self.parse_list(frozenset({"}"}))
            self.expect("}")
            return Group(body, False, self.redirects())
        if self.is_op(self.peek(), "("):
            self.pos += 1
            body = self.parse_list(stop_ops=frozenset({")"}))
            self.skip_newlines()
            if not self.is_op(self.peek(), ")"):
                raise self.fail(self.peek())
            self.pos += 1
            return Group(body, True, self.redirects())
        t = self.peek()
        if isinstance(t, Word) and _NAME_RE.fullmatch(_literal(t) or "") and \
                self.pos + 2 < len(self.toks) + 1 and \
                self.is_op(self.toks[self.pos + 1] if self.pos + 1 < len(self.toks) else None,
                           "(") and \
                self.is_op(self.toks[self.pos + 2] if self.pos + 2 < len(self.toks) else None,
                           ")"):
            name = _literal(t) or ""
            self.pos += 3
            self.skip_newlines()
            if self.peek() is None:
                raise self.fail(None)
            return FuncDef(name, self.command())
        return self.simple()

    def simple(self) -> Command:
        cmd = Command()
        first = self.peek()
        if isinstance(first, Word):
            cmd.line = first.line
        while True:
            t = self.peek()
            if isinstance(t, Op) and _REDIRECT_RE.fullmatch(t.value):
                cmd.redirects.extend(self.redirects())
            elif isinstance(t, Word):
                self.pos += 1
                text = _literal(t)
                if not cmd.words and text is not None and "=" in text and \
                        _NAME_RE.fullmatch(text.split("=", 1)[0]) and \
                        t.parts[0].kind == "bare" and "=" in t.parts[0].text:
                    name, _, first = t.parts[0].text.partition("=")
                    value_parts = ((Part(first, "bare"),) if first else ()) + t.parts[1:]
                    cmd.assigns.append((name, Word(value_parts)))
                else:
                    cmd.words.append(t)
            else:
                break
        if not cmd.words and not cmd.assigns and not cmd.redirects:
            raise self.fail(self.peek())
        return cmd


def parse(src: str) -> list[AndOr]:
    """Parse a script into a list of and-or lists. Raises ``ShellSyntaxError``
    (``incomplete`` set when more input could complete it)."""
    p = _Parser(tokenize(src))
    items = p.parse_list()
    if p.peek() is not None:
        raise p.fail(p.peek())
    return items


def _literal(w: Word | Op | None) -> str | None:
    if not isinstance(w, Word):
        return None
    return "".join(p.text for p in w.parts)


# ============================================================================================
# the shell
# ============================================================================================

class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Break(Exception):
    def __init__(self, levels: int) -> None:
        self.levels = max(1, levels)


class _Continue(_Break):
    pass


class _Return(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


#: builtins that stand for a program of the image: they run only where the image has it
_IMAGE_TOOLS = frozenset({"apt-get", "apt", "dpkg", "dpkg-query", "apk"})
_MAX_LOOPS = 10_000  # with nothing running concurrently, longer loops are runaways


class _Usage(Exception):
    """A command-line error inside a builtin: message already worded by the builtin."""


class _RedirectError(_Usage):
    """A redirection that cannot be set up (the command does not run)."""


@dataclass
class _IO:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO


def _errmsg(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


class Shell:
    """One shell session on ``fs``. Use ``run()`` unless you need to keep the session
    (``Shell(fs, ...).execute(text)`` runs more text in the same session)."""

    def __init__(self, fs: Any, *, env: Mapping[str, str] | None = None, workdir: str = "/",
                 hostname: str = "localhost", name: str = "sh",
                 stdin: TextIO | None = None, stdout: TextIO | None = None,
                 stderr: TextIO | None = None, interactive: bool = False) -> None:
        self.fs = fs
        self.vars: dict[str, str] = dict(env or {})
        self.exported: set[str] = set(self.vars)
        self.vars.setdefault("PATH", DEFAULT_PATH)
        self.vars.setdefault("HOME", "/root")
        self.vars.setdefault("HOSTNAME", hostname)
        self.exported |= {"PATH", "HOME", "HOSTNAME"}
        self.hostname = hostname
        self.name = posixpath.basename(name) or "sh"
        self.cwd = "/" + posixpath.normpath("/" + (workdir or "/")).lstrip("/")
        self.vars["PWD"] = self.cwd
        self.exported.add("PWD")
        self.status = 0
        self.positional: list[str] = []
        self.lineno = 0
        self.base_line = 0   # lines read before the text being run (the REPL's count)
        self.functions: dict[str, Any] = {}
        self.interactive = interactive
        self.io = _IO(stdin or io.StringIO(), stdout or io.StringIO(), stderr or io.StringIO())
        self.builtins: dict[str, Callable[[list[str], _IO], int]] = {
            name[2:].replace("_", "-"): getattr(self, name)
            for name in dir(self) if name.startswith("b_")
        }
        self.builtins["["] = self.b_test
        self.builtins[":"] = self.b_true
        self.builtins["."] = self.b_source
        # `tree` exists only once the tree package is installed: its /usr/bin/tree script
        # calls this hidden builtin, so a fresh image answers `tree: not found` as a real one
        self.builtins["__imagesim_tree"] = self.builtins.pop("tree")

    # --- paths and small fs helpers ----------------------------------------------------------

    def abspath(self, path: str) -> str:
        """``path`` taken from the working directory, ``..`` resolved lexically."""
        if not path:
            return self.cwd
        full = path if path.startswith("/") else posixpath.join(self.cwd, path)
        out = posixpath.normpath(full)
        return "/" + out.lstrip("/")

    def lstat(self, path: str) -> Any | None:
        try:
            return self.fs.lstat(self.abspath(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stat(self, path: str) -> Any | None:
        try:
            return self.fs.stat(self.abspath(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                return None
            raise

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and _stat.S_ISDIR(st.st_mode)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(self.abspath(path), "rb") as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes, append: bool = False) -> None:
        with self.fs.open(self.abspath(path), "ab" if append else "wb") as f:
            f.write(data)

    # --- running -----------------------------------------------------------------------------

    def prompt(self) -> str:
        home = self.vars.get("HOME", "/root")
        where = self.cwd
        if home != "/" and (where == home or where.startswith(home + "/")):
            where = "~" + where[len(home):]
        user = self.vars.get("USER", "root")
        return f"{user}@{self.hostname}:{where}{'#' if user == 'root' else '$'} "

    def execute(self, text: str) -> int:
        """Parse and run ``text`` in this session; return the last status. ``exit`` raises
        the internal ``_Exit`` (caught by ``run_script``/``run``)."""
        try:
            lists = parse(text)
        except ShellSyntaxError as e:
            self.error(str(e))
            self.status = 2
            return 2
        for item in lists:
            try:
                self.status = self.run_andor(item)
            except _Break:
                pass  # `break` outside a loop does nothing, as in sh
        return self.status

    def run_script(self, text: str) -> int:
        """Run a whole script; ``exit N`` ends it with N."""
        try:
            return self.execute(text)
        except _Exit as e:
            return e.status
        except _Return as r:  # `return` outside a function ends the script
            return r.status

    def error(self, msg: str) -> None:
        """A shell-level message: interactive ``bash: MSG``; a script's ``bash: line N: MSG``
        (bash 5) or ``sh: N: MSG`` (dash)."""
        if self.interactive:
            self.io.stderr.write(f"{self.name}: {msg}\n")
        elif self.name == "bash":
            self.io.stderr.write(f"{self.name}: line {max(self.lineno, 1)}: {msg}\n")
        else:
            self.io.stderr.write(f"{self.name}: {max(self.lineno, 1)}: {msg}\n")

    def run_andor(self, item: AndOr) -> int:
        status = self.run_pipeline(item.first)
        for op, pipe in item.rest:
            if (op == "&&") == (status == 0):
                status = self.run_pipeline(pipe)
        return status

    def run_pipeline(self, pipe: Pipeline) -> int:
        stdin = self.io.stdin
        status = 0
        for i, cmd in enumerate(pipe.commands):
            last = i == len(pipe.commands) - 1
            out = self.io.stdout if last else io.StringIO()
            status = self.run_command(cmd, _IO(stdin, out, self.io.stderr))
            if not last:
                stdin = io.StringIO(out.getvalue())  # type: ignore[attr-defined]
        self.status = (0 if status else 1) if pipe.negate else status
        return self.status

    def run_list(self, items: list[AndOr]) -> int:
        status = 0
        for item in items:
            status = self.run_andor(item)
            self.status = status
        return status

    def run_compound(self, cmd: Any, streams: _IO) -> int:
        if isinstance(cmd, FuncDef):
            self.functions[cmd.name] = cmd.body
            return 0
        try:
            with self.redirected(cmd.redirects, streams) as rio:
                saved, self.io = self.io, rio
                try:
                    return self._compound(cmd)
                finally:
                    self.io = saved
        except _Usage:
            return 1

    def _compound(self, cmd: Any) -> int:
        if isinstance(cmd, Group):
            if not cmd.subshell:
                return self.run_list(cmd.body)
            child = Shell(self.fs, env=self.vars, workdir=self.cwd, hostname=self.hostname,
                          name=self.name, stdin=self.io.stdin, stdout=self.io.stdout,
                          stderr=self.io.stderr)
            child.exported = set(self.exported)
            child.positional = list(self.positional)
            child.functions = dict(self.functions)
            child.base_line = self.base_line
            try:
                return child.run_list(cmd.body)
            except _Exit as e:
                return e.status  # `exit` in ( ... ) leaves only the subshell
        if isinstance(cmd, Case):
            value = self.expand_word(cmd.subject, split=False, glob=False)[0]
            for patterns, body in cmd.arms:
                for pat in patterns:
                    # quoted parts of a pattern match literally, bare parts as globs
                    text = "".join(p.text if p.kind == "bare" else _glob_escape(
                        "".join(t for t, _ in self.expand_text(p.text))
                        if p.kind == "double" else p.text) for p in pat.parts)
                    text = "".join(t for t, _ in self.expand_text(text)) \
                        if "$" in text else text
                    if fnmatch.fnmatchcase(value, text):
                        return self.run_list(body)
            return 0
        if isinstance(cmd, If):
            for cond, body in cmd.branches:
                if self.run_list(cond) == 0:
                    return self.run_list(body)
            return self.run_list(cmd.orelse) if cmd.orelse is not None else 0
        status = 0
        if isinstance(cmd, For):
            values = self.expand_words(cmd.words) if cmd.words is not None \
                else list(self.positional)
            for v in values:
                self.vars[cmd.name] = v
                status, stop = self._loop_round(cmd.body, status)
                if stop:
                    break
            return status
        rounds = 0
        while (self.run_list(cmd.cond) == 0) != cmd.until:
            rounds += 1
            if rounds > _MAX_LOOPS:
                self.error(f"loop stopped after {_MAX_LOOPS} rounds (nothing runs "
                           "concurrently here, so it could never end)")
                return 1
            status, stop = self._loop_round(cmd.body, status)
            if stop:
                break
        return status

    def _loop_round(self, body: Any, status: int) -> tuple[int, bool]:
        """One round of a loop's body: (its status, whether ``break`` ends the loop).
        ``continue N``/``break N`` with N > 1 go on to the enclosing loop one level less."""
        try:
            return self.run_list(body), False
        except _Continue as c:
            if c.levels > 1:
                raise _Continue(c.levels - 1) from None
            return status, False
        except _Break as b:
            if b.levels > 1:
                raise _Break(b.levels - 1) from None
            return status, True

    def b_return(self, args: list[str], rio: _IO) -> int:
        raise _Return(int(args[0]) & 0xFF if args and args[0].isdigit() else self.status)

    def b_break(self, args: list[str], rio: _IO) -> int:
        raise _Break(int(args[0]) if args and args[0].isdigit() else 1)

    def b_continue(self, args: list[str], rio: _IO) -> int:
        raise _Continue(int(args[0]) if args and args[0].isdigit() else 1)

    def run_command(self, cmd: Any, streams: _IO) -> int:
        if not isinstance(cmd, Command):
            return self.run_compound(cmd, streams)
        self.lineno = self.base_line + cmd.line
        try:
            words = self.expand_words(cmd.words)
            assigns = [(n, self.expand_word(w, split=False, glob=False)[0] if w.parts else "")
                       for n, w in cmd.assigns]
        except _Usage as e:
            self.error(str(e))
            return 1
        if not words:
            for n, v in assigns:
                self.vars[n] = v
            # redirections alone still create/truncate their files, as in sh
            try:
                with self.redirected(cmd.redirects, streams):
                    pass
            except _Usage:
                return 1
            return 0
        saved = {n: self.vars.get(n) for n, _ in assigns}
        added = {n for n, _ in assigns} - self.exported
        for n, v in assigns:
            self.vars[n] = v
            self.exported.add(n)  # `NAME=v cmd` puts NAME in cmd's environment only
        try:
            with self.redirected(cmd.redirects, streams) as rio:
                return self.dispatch(words, rio)
        except _RedirectError:
            return 1 if self.name == "bash" else 2
        except _Usage:
            return 1
        finally:
            self.exported -= added
            for n, old in saved.items():
                if old is None:
                    self.vars.pop(n, None)
                else:
                    self.vars[n] = old

    @contextlib.contextmanager
    def redirected(self, redirects: list[Redirect], streams: _IO) -> Iterator[_IO]:
        """Apply redirections: files are opened (created/truncated) before the command runs
        and receive its output when it finishes."""
        rio = _IO(streams.stdin, streams.stdout, streams.stderr)
        pending: list[tuple[str, io.StringIO, bool]] = []
        for r in redirects:
            if r.op == "<<":
                part = r.target.parts[0] if r.target.parts else Part("", "single")
                body = part.text if part.kind == "single" else \
                    "".join(t for t, _ in self.expand_text(part.text))
                rio.stdin = io.StringIO(body)
                continue
            target = self.expand_word(r.target, split=False, glob=False)[0]
            if r.op == ">&" and target in ("1", "2"):
                stream = rio.stdout if target == "1" else rio.stderr
                if r.fd == 2:
                    rio.stderr = stream
                else:
                    rio.stdout = stream
                continue
            # (`>&file` is bash's `&>file`: both streams to the file, handled below)
            if target == "/dev/null":
                # the runtime provides /dev (images do not): reads are empty, writes vanish
                if r.op == "<":
                    rio.stdin = io.StringIO()
                elif r.op in ("&>", ">&"):
                    rio.stdout = rio.stderr = io.StringIO()
                elif r.fd == 2:
                    rio.stderr = io.StringIO()
                else:
                    rio.stdout = io.StringIO()
                continue
            if r.op == "<":
                try:
                    data = self.read_bytes(target)
                except OSError as e:
                    if self.name == "bash" or self.interactive:
                        self.error(f"{target}: {_errmsg(e)}")
                    else:  # dash's words (and its status 2, set by the caller)
                        why = {errno.ENOENT: "No such file"}.get(e.errno or 0, _errmsg(e))
                        self.error(f"cannot open {target}: {why}")
                    raise _RedirectError(target) from None
                rio.stdin = io.StringIO(data.decode("utf-8", "replace"))
                continue
            append = r.op == ">>"
            try:
                path = self.abspath(target)
                if self.is_dir(target):
                    raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
                if not append:
                    self.write_bytes(target, b"")
                else:
                    self.write_bytes(target, b"", append=True)
            except OSError as e:
                if self.name == "bash" or self.interactive:
                    self.error(f"{target}: {_errmsg(e)}")
                else:
                    why = "Directory nonexistent" if e.errno == errno.ENOENT else _errmsg(e)
                    self.error(f"cannot create {target}: {why}")
                raise _RedirectError(target) from None
            buf = io.StringIO()
            pending.append((target, buf, True))
            if r.op in ("&>", ">&"):
                rio.stdout = rio.stderr = buf
            elif r.fd == 2:
                rio.stderr = buf
            else:
                rio.stdout = buf
        try:
            yield rio
        finally:
            for target, buf, _ in pending:
                data = buf.getvalue().encode("utf-8", "surrogateescape")
                if data:
                    try:
                        self.write_bytes(target, data, append=True)
                    except OSError as e:
                        self.error(f"{target}: {_errmsg(e)}")

    def dispatch(self, words: list[str], rio: _IO) -> int:
        name, args = words[0], words[1:]
        body = self.functions.get(name)
        if body is not None:
            saved = self.positional
            self.positional = list(args)
            try:
                return self.run_command(body, rio)
            except _Return as r:
                return r.status
            finally:
                self.positional = saved
        fn = self.builtins.get(name)
        if name in _IMAGE_TOOLS and self.find_program(name) is None:
            fn = None  # no package manager in this image (alpine has apk, scratch nothing)
        if fn is not None and "/" not in name:
            try:
                return fn(args, rio)
            except (_Exit, _Break, _Return, BrokenPipeError):
                raise  # a closed pipe ends the shell as SIGPIPE would, silently
            except _Usage:
                return 1
            except OSError as e:
                rio.stderr.write(f"{name}: {_errmsg(e)}\n")
                return 1
        path = self.find_program(name)
        if path is None:
            if "/" in name:
                self.error(f"{name}: No such file or directory")
            elif self.name == "bash" or self.interactive:
                self.error(f"{name}: command not found")
            else:
                self.error(f"{name}: not found")
            return 127
        return self.run_file(path, name, args, rio)

    def find_program(self, name: str) -> str | None:
        if "/" in name:
            st = self.stat(name)
            return self.abspath(name) if st is not None else None
        for d in self.vars.get("PATH", DEFAULT_PATH).split(":"):
            if not d:
                continue
            cand = posixpath.join(d, name)
            st = self.stat(cand)
            if st is not None and _stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                return cand
        return None

    def run_file(self, path: str, name: str, args: list[str], rio: _IO) -> int:
        """Run a file from the container: ``#!`` shell scripts are interpreted here; anything
        else stands for a real binary, which this simulator never executes."""
        st = self.stat(path)
        if st is not None and _stat.S_ISDIR(st.st_mode):
            self.error(f"{name}: Is a directory" if self.name == "bash"
                       else f"{name}: Permission denied")
            return 126
        if st is None or not st.st_mode & 0o111:
            self.error(f"{name}: Permission denied")
            return 126
        try:
            head = self.read_bytes(path)
        except OSError as e:
            self.error(f"{name}: {_errmsg(e)}")
            return 126
        first = head.split(b"\n", 1)[0]
        if first.startswith(b"#!") and posixpath.basename(
                first[2:].strip().split(b" ")[0].decode("utf-8", "replace")) in \
                {"sh", "bash", "dash", "ash"}:
            return self.subshell(head.decode("utf-8", "replace"), [name, *args], rio)
        self.error(f"{name}: cannot execute: a stand-in for a binary (imagesim runs no "
                   "programs; the built-in shell knows ls, cat, cp, mv, rm, apt-get ...)")
        return 126

    def subshell(self, text: str, argv: list[str], rio: _IO) -> int:
        child = Shell(self.fs, env={k: v for k, v in self.vars.items() if k in self.exported},
                      workdir=self.cwd, hostname=self.hostname, name=self.name,
                      stdin=rio.stdin, stdout=rio.stdout, stderr=rio.stderr)
        child.positional = list(argv[1:])
        child.vars["0"] = argv[0]
        return child.run_script(text)

    # --- expansion ---------------------------------------------------------------------------

    def substitute(self, script: str) -> str:
        """``$(script)``: run it in a subshell of this one; its output, trailing newlines
        removed."""
        buf = io.StringIO()
        child = Shell(self.fs, env=self.vars, workdir=self.cwd, hostname=self.hostname,
                      name=self.name, stdin=self.io.stdin, stdout=buf, stderr=self.io.stderr)
        child.exported = set(self.exported)
        child.positional = list(self.positional)
        self.status = child.run_script(script)
        return buf.getvalue().rstrip("\n")

    def arith(self, expr: str) -> int:
        """``$((expr))``: integer arithmetic; names are variables (unset or empty = 0)."""
        import ast

        text = "".join(t for t, _ in self.expand_text(expr))

        def name_value(m: re.Match[str]) -> str:
            v = self.vars.get(m.group(0), "0") or "0"
            return v if re.fullmatch(r"-?\d+", v.strip()) else "0"

        text = re.sub(r"[A-Za-z_][A-Za-z0-9_]*", name_value, text)
        text = text.replace("&&", " and ").replace("||", " or ")
        try:
            tree = ast.parse(text.strip() or "0", mode="eval")
        except SyntaxError:
            raise _Usage(f"arithmetic expression: syntax error: \"{expr.strip()}\"") from None
        ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
               ast.Mult: lambda a, b: a * b, ast.Mod: lambda a, b: a % b,
               ast.Div: lambda a, b: int(a / b), ast.FloorDiv: lambda a, b: int(a / b),
               ast.Pow: lambda a, b: a ** b}
        cmps = {ast.Lt: int.__lt__, ast.LtE: int.__le__, ast.Gt: int.__gt__,
                ast.GtE: int.__ge__, ast.Eq: int.__eq__, ast.NotEq: int.__ne__}

        def ev(node: ast.AST) -> int:
            if isinstance(node, ast.Expression):
                return ev(node.body)
            if isinstance(node, ast.Constant) and isinstance(node.value, int):
                return node.value
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd,
                                                                      ast.Not)):
                v = ev(node.operand)
                return -v if isinstance(node.op, ast.USub) else (int(not v) if isinstance(
                    node.op, ast.Not) else v)
            if isinstance(node, ast.BinOp) and type(node.op) in ops:
                right = ev(node.right)
                if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
                    raise _Usage("arithmetic expression: division by zero")
                return int(ops[type(node.op)](ev(node.left), right))
            if isinstance(node, ast.Compare) and len(node.ops) == 1 and \
                    type(node.ops[0]) in cmps:
                return int(cmps[type(node.ops[0])](ev(node.left), ev(node.comparators[0])))
            if isinstance(node, ast.BoolOp):
                vals = [ev(v) for v in node.values]
                return int(all(vals) if isinstance(node.op, ast.And) else any(vals))
            raise _Usage(f"arithmetic expression: unsupported: \"{expr.strip()}\"")

        return ev(tree)

    def expand_words(self, words: list[Word]) -> list[str]:
        out: list[str] = []
        for w in words:
            out.extend(self.expand_word(w))
        return out

    def param(self, name: str) -> str | list[str] | None:
        if name == "?":
            return str(self.status)
        if name == "$":
            return "1"
        if name == "#":
            return str(len(self.positional))
        if name in ("@", "*"):
            return list(self.positional)
        if name == "0":
            return self.vars.get("0", self.name)
        if name.isdigit():
            i = int(name)
            return self.positional[i - 1] if i <= len(self.positional) else None
        return self.vars.get(name)

    def expand_text(self, text: str) -> list[tuple[str, bool]]:
        """Expand ``$...`` in ``text``; returns (piece, came_from_expansion) pairs."""
        out: list[tuple[str, bool]] = []
        i, n = 0, len(text)
        lit: list[str] = []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and text[i + 1] == "$":
                lit.append("$")
                i += 2
                continue
            if c != "$" or i + 1 >= n:
                lit.append(c)
                i += 1
                continue
            nxt = text[i + 1]
            value: str | list[str] | None
            if nxt == "(":
                try:
                    j = _scan_paren(text, i + 1)
                except ShellSyntaxError:
                    raise _Usage("unterminated $(") from None
                if text[i + 2:i + 3] == "(" and text[j - 2:j] == "))":
                    value = str(self.arith(text[i + 3:j - 2]))
                else:
                    value = self.substitute(text[i + 2:j - 1])
                i = j
            elif nxt == "{":
                j = text.find("}", i + 2)
                if j < 0:
                    raise _Usage("bad substitution")
                inner = text[i + 2:j]
                m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*|\d+|[?#@*$])(?:(:?[-=+?])(.*))?",
                                 inner, re.S)
                if inner.startswith("#") and _NAME_RE.fullmatch(inner[1:]):
                    v = self.param(inner[1:])
                    value = str(len(v if isinstance(v, str) else " ".join(v or [])))
                elif not m:
                    raise _Usage(f"${{{inner}}}: bad substitution")
                else:
                    value = self.param(m.group(1))
                    op, word = m.group(2), m.group(3)
                    empty = value is None or (op and op.startswith(":") and value == "")
                    if op in ("-", ":-") and empty:
                        value = word
                    elif op in ("=", ":=") and empty:
                        value = word
                        self.vars[m.group(1)] = word
                    elif op in ("+", ":+"):
                        value = "" if empty else word
                    elif op in ("?", ":?") and empty:
                        raise _Usage(f"{m.group(1)}: {word or 'parameter null or not set'}")
                i = j + 1
            elif nxt in "?$#@*" or nxt.isdigit():
                value = self.param(nxt)
                i += 2
            else:
                m = _NAME_RE.match(text, i + 1)
                if not m:
                    lit.append("$")
                    i += 1
                    continue
                value = self.param(m.group(0))
                i = m.end()
            if lit:
                out.append(("".join(lit), False))
                lit.clear()
            if isinstance(value, list):
                out.append(("\0".join(value), True))
            else:
                out.append((value or "", True))
        if lit:
            out.append(("".join(lit), False))
        return out

    def expand_word(self, w: Word, split: bool = True, glob: bool = True) -> list[str]:
        # fields: list of list of (text, globbable)
        fields: list[list[tuple[str, bool]]] = [[]]
        quoted_any = False
        for part in w.parts:
            if part.kind == "single":
                fields[-1].append((part.text, False))
                quoted_any = True
                continue
            pieces = self.expand_text(part.text)
            if part.kind == "double":
                quoted_any = True
                for text, from_exp in pieces:
                    if from_exp and "\0" in text:  # "$@": one field per parameter
                        items = text.split("\0")
                        fields[-1].append((items[0], False))
                        for item in items[1:]:
                            fields.append([(item, False)])
                    else:
                        fields[-1].append((text.replace("\0", " "), False))
                continue
            for text, from_exp in pieces:
                if from_exp and split:
                    items = re.split(r"[ \t\n\0]+", text)
                    if items and items[0] == "":
                        if fields[-1]:
                            fields.append([])
                        items = items[1:]
                    for k, item in enumerate(items):
                        if k:
                            fields.append([])
                        if item:
                            fields[-1].append((item, True))
                else:
                    fields[-1].append((text, True))
        out: list[str] = []
        for f in fields:
            text = "".join(t for t, _ in f)
            if not f:
                continue
            if not text and not quoted_any:
                continue
            if glob and any(g and any(ch in t for ch in "*?[") for t, g in f):
                pattern = "".join(t if g else _glob_escape(t) for t, g in f)
                matches = self.glob(pattern)
                if matches:
                    out.extend(matches)
                    continue
            out.append(text)
        if not out and quoted_any:
            out.append("")
        return out

    def glob(self, pattern: str) -> list[str]:
        """Paths matching ``pattern`` (relative stays relative), sorted; hidden names only
        when the pattern component starts with a dot."""
        absolute = pattern.startswith("/")
        comps = [c for c in pattern.split("/") if c]
        bases = ["/" if absolute else ""]
        for k, comp in enumerate(comps):
            last = k == len(comps) - 1
            nxt = []
            for base in bases:
                if not any(ch in comp for ch in "*?["):
                    cand = _join(base, _glob_unescape(comp))
                    if self.lstat(cand or ".") is not None:
                        nxt.append(cand)
                    continue
                dir_ = base or "."
                try:
                    names = self.fs.listdir(self.abspath(dir_))
                except OSError:
                    continue
                for name in sorted(names):
                    if name.startswith(".") and not comp.startswith("."):
                        continue
                    if fnmatch.fnmatchcase(name, comp):
                        cand = _join(base, name)
                        if last or self.is_dir(cand):
                            nxt.append(cand)
            bases = nxt
        return sorted(bases)

    # ========================================================================================
    # builtins (each: args, streams -> status)
    # ========================================================================================

    def b_true(self, args: list[str], rio: _IO) -> int:
        return 0

    def b_false(self, args: list[str], rio: _IO) -> int:
        return 1

    def b_read(self, args: list[str], rio: _IO) -> int:
        """``read [-r] [-p PROMPT] NAME...``: one line of stdin split over the names."""
        names, raw, it = [], False, iter(args)
        for a in it:
            if a == "-r":
                raw = True
            elif a == "-p":
                rio.stderr.write(next(it, ""))
            else:
                names.append(a)
        line = rio.stdin.readline()
        if not line:
            return 1
        line = line.rstrip("\n")
        if not raw:
            line = line.replace("\\", "")
        names = names or ["REPLY"]
        fields = line.split(None, len(names) - 1) if len(names) > 1 else [line.strip()]
        for k, name in enumerate(names):
            self.vars[name] = fields[k] if k < len(fields) else ""
        return 0

    def b_clear(self, args: list[str], rio: _IO) -> int:
        if self.interactive:
            rio.stdout.write("\x1b[H\x1b[2J")
        return 0

    def b_sleep(self, args: list[str], rio: _IO) -> int:
        return 0  # nothing runs concurrently here: waiting would only slow the lesson down

    def b_exit(self, args: list[str], rio: _IO) -> int:
        code = self.status
        if args:
            try:
                code = int(args[0]) & 0xFF
            except ValueError:
                self.error(f"exit: Illegal number: {args[0]}")
                code = 2
        raise _Exit(code)

    def b_pwd(self, args: list[str], rio: _IO) -> int:
        rio.stdout.write(self.cwd + "\n")
        return 0

    def b_cd(self, args: list[str], rio: _IO) -> int:
        args = [a for a in args if a not in ("-L", "-P")]
        if len(args) > 1 and self.name == "bash":
            self.error("cd: too many arguments")
            return 1
        target = args[0] if args else self.vars.get("HOME", "/")
        if target == "-":
            target = self.vars.get("OLDPWD", self.cwd)
            rio.stdout.write(target + "\n")
        path = self.abspath(target)
        st = self.stat(path)
        if st is None or not _stat.S_ISDIR(st.st_mode):
            why = "No such file or directory" if st is None else "Not a directory"
            if self.name == "bash" or self.interactive:
                self.error(f"cd: {target}: {why}")
            else:
                self.error(f"cd: can't cd to {target}")
            return 1 if self.name == "bash" or self.interactive else 2
        self.vars["OLDPWD"] = self.cwd
        self.cwd = path
        self.vars["PWD"] = path
        return 0

    def b_echo(self, args: list[str], rio: _IO) -> int:
        newline, escapes = True, self.name != "bash"
        while args and re.fullmatch(r"-[neE]+", args[0]):
            flags = args.pop(0)
            newline = newline and "n" not in flags
            if "e" in flags:
                escapes = True
            if "E" in flags:
                escapes = False
        text = " ".join(args)
        if escapes and "\\" in text:
            text, stop = _unescape(text)
            if stop:
                newline = False
        rio.stdout.write(text + ("\n" if newline else ""))
        return 0

    def b_printf(self, args: list[str], rio: _IO) -> int:
        if not args:
            rio.stderr.write("printf: usage: printf format [arguments]\n")
            return 2
        fmt, rest = args[0], args[1:]
        fmt, _ = _unescape(fmt)
        specs = re.compile(r"%([-+ #0]*\d*(?:\.\d+)?)([sdiouxXc%b])")
        out = []
        while True:
            consumed = 0
            current = rest

            def sub(m: re.Match[str], current: list[str] = current) -> str:
                nonlocal consumed
                if m.group(2) == "%":
                    return "%"
                val = current[consumed] if consumed < len(current) else ""
                consumed += 1
                conv = m.group(2)
                if conv in "diouxXc":
                    try:
                        num = int(val or "0", 0)
                    except ValueError:
                        rio.stderr.write(f"printf: {val}: invalid number\n")
                        num = 0
                    return ("%" + m.group(1) + ("d" if conv in "iu" else conv)) % (
                        chr(num) if conv == "c" else num)
                if conv == "b":
                    return _unescape(val)[0]
                return ("%" + m.group(1) + "s") % val

            out.append(specs.sub(sub, fmt))
            rest = rest[consumed:]
            if not rest or not consumed:
                break
        rio.stdout.write("".join(out))
        return 0

    def b_env(self, args: list[str], rio: _IO) -> int:
        clear = False
        while args and args[0] in ("-i", "--ignore-environment", "-"):
            clear = True
            args = args[1:]
        if clear and not args:
            return 0
        if clear or args:
            extra = {}
            while args and "=" in args[0]:
                k, _, v = args.pop(0).partition("=")
                extra[k] = v
            if args:
                saved, saved_exp = dict(self.vars), set(self.exported)
                if clear:  # builtins need no PATH; programs in files are then not found
                    self.vars, self.exported = {}, set()
                self.vars.update(extra)
                self.exported |= set(extra)
                try:
                    return self.dispatch(args, rio)
                finally:
                    self.vars, self.exported = saved, saved_exp
            if clear:
                for k, v in extra.items():
                    rio.stdout.write(f"{k}={v}\n")
                return 0
            for k, v in extra.items():
                rio.stdout.write(f"{k}={v}\n")
        for k in sorted(self.exported):
            if k in self.vars:
                rio.stdout.write(f"{k}={self.vars[k]}\n")
        return 0

    b_printenv = b_env

    def b_export(self, args: list[str], rio: _IO) -> int:
        if not args or args == ["-p"]:
            for k in sorted(self.exported):
                if k in self.vars:
                    rio.stdout.write(f'export {k}="{self.vars[k]}"\n')
            return 0
        for a in args:
            name, eq, value = a.partition("=")
            if not _NAME_RE.fullmatch(name):
                self.error(f"export: `{a}': not a valid identifier")
                return 1
            if eq:
                self.vars[name] = value
            self.exported.add(name)
        return 0

    def b_unset(self, args: list[str], rio: _IO) -> int:
        for a in args:
            if a in ("-v", "-f"):
                continue
            self.vars.pop(a, None)
            self.exported.discard(a)
        return 0

    def b_set(self, args: list[str], rio: _IO) -> int:
        if not args:
            for k in sorted(self.vars):
                if _NAME_RE.fullmatch(k):
                    rio.stdout.write(f"{k}='{self.vars[k]}'\n")
            return 0
        if args[0] == "--":
            self.positional = args[1:]
        return 0  # -e/-x and other options are accepted and ignored

    def b_shift(self, args: list[str], rio: _IO) -> int:
        k = int(args[0]) if args else 1
        if k > len(self.positional):
            return 1
        self.positional = self.positional[k:]
        return 0

    def b_hostname(self, args: list[str], rio: _IO) -> int:
        rio.stdout.write(self.hostname + "\n")
        return 0

    def b_whoami(self, args: list[str], rio: _IO) -> int:
        rio.stdout.write(self.vars.get("USER", "root") + "\n")
        return 0

    def b_id(self, args: list[str], rio: _IO) -> int:
        rio.stdout.write("uid=0(root) gid=0(root) groups=0(root)\n")
        return 0

    def b_uname(self, args: list[str], rio: _IO) -> int:
        if "-a" in args:
            rio.stdout.write(f"Linux {self.hostname} 6.1.0-imagesim #1 SMP x86_64 GNU/Linux\n")
        elif "-r" in args:
            rio.stdout.write("6.1.0-imagesim\n")
        elif "-m" in args:
            rio.stdout.write("x86_64\n")
        else:
            rio.stdout.write("Linux\n")
        return 0

    def b_basename(self, args: list[str], rio: _IO) -> int:
        if not args:
            rio.stderr.write("basename: missing operand\n")
            return 1
        name = posixpath.basename(args[0].rstrip("/")) or "/"
        if len(args) > 1 and name.endswith(args[1]) and name != args[1]:
            name = name[: -len(args[1])]
        rio.stdout.write(name + "\n")
        return 0

    def b_dirname(self, args: list[str], rio: _IO) -> int:
        if not args:
            rio.stderr.write("dirname: missing operand\n")
            return 1
        for a in args:
            rio.stdout.write((posixpath.dirname(a.rstrip("/")) or ".") + "\n")
        return 0

    def b_type(self, args: list[str], rio: _IO) -> int:
        status = 0
        for a in args:
            if a in self.builtins:
                rio.stdout.write(f"{a} is a shell builtin\n")
            elif (p := self.find_program(a)) is not None:
                rio.stdout.write(f"{a} is {p}\n")
            else:
                self.error(f"type: {a}: not found")
                status = 1
        return status

    def b_which(self, args: list[str], rio: _IO) -> int:
        """``which NAME``: the file in ``$PATH`` (an image's file, not the builtin)."""
        show_all = "-a" in args
        names = [a for a in args if a != "-a"]
        if not names:
            return 1
        status = 0
        for name in names:
            found = False
            dirs = [""] if "/" in name else self.vars.get("PATH", DEFAULT_PATH).split(":")
            for d in dirs:
                cand = name if not d else posixpath.join(d, name)
                st = self.stat(cand)
                if st is not None and _stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    rio.stdout.write(cand + "\n")
                    found = True
                    if not show_all:
                        break
            if not found:
                status = 1
        return status

    def b_source(self, args: list[str], rio: _IO) -> int:
        if not args:
            self.error(".: filename argument required")
            return 2
        try:
            text = self.read_bytes(args[0]).decode("utf-8", "replace")
        except OSError as e:
            self.error(f".: {args[0]}: {_errmsg(e)}" if self.name != "bash"
                       else f"{args[0]}: {_errmsg(e)}")
            return 1 if self.name == "bash" else 2
        saved_io, saved_pos = self.io, self.positional
        self.io = rio
        if len(args) > 1:
            self.positional = args[1:]
        try:
            return self.execute(text)
        except _Return as r:  # `return` ends a sourced file
            return r.status
        finally:
            self.io, self.positional = saved_io, saved_pos

    def b_sh(self, args: list[str], rio: _IO) -> int:
        return self._nested("sh", args, rio)

    def b_bash(self, args: list[str], rio: _IO) -> int:
        return self._nested("bash", args, rio)

    def _nested(self, name: str, args: list[str], rio: _IO) -> int:
        env = {k: v for k, v in self.vars.items() if k in self.exported}
        return run(self.fs, argv=[name, *args], env=env, workdir=self.cwd,
                   hostname=self.hostname, stdin=rio.stdin, stdout=rio.stdout,
                   stderr=rio.stderr, interactive=False)

    # --- test / [ ---------------------------------------------------------------------------

    def b_test(self, args: list[str], rio: _IO) -> int:
        if args and args[-1] == "]":
            args = args[:-1]
        try:
            return 0 if self._test(args) else 1
        except _Usage as e:
            msg = str(e)
            if self.name != "bash" and msg.endswith(": integer expression expected"):
                msg = "Illegal number: " + msg.rsplit(":", 1)[0]
            self.error(f"test: {msg}")
            return 2

    def _test(self, a: list[str]) -> bool:
        if not a:
            return False
        if a[0] == "!":
            return not self._test(a[1:])
        for op in ("-o", "-a"):
            if op in a[1:-1]:
                k = a.index(op, 1)
                left, right = self._test(a[:k]), self._test(a[k + 1:])
                return (left or right) if op == "-o" else (left and right)
        if len(a) == 1:
            return a[0] != ""
        if len(a) == 2:
            op, x = a
            if op == "-n":
                return x != ""
            if op == "-z":
                return x == ""
            st = self.stat(x) if op != "-L" and op != "-h" else self.lstat(x)
            checks: dict[str, Callable[[Any], bool]] = {
                "-e": lambda s: True, "-f": lambda s: _stat.S_ISREG(s.st_mode),
                "-d": lambda s: _stat.S_ISDIR(s.st_mode),
                "-L": lambda s: _stat.S_ISLNK(s.st_mode),
                "-h": lambda s: _stat.S_ISLNK(s.st_mode),
                "-s": lambda s: s.st_size > 0, "-x": lambda s: bool(s.st_mode & 0o111),
                "-r": lambda s: True, "-w": lambda s: True,
            }
            if op not in checks:
                raise _Usage(f"{op}: unary operator expected")
            return st is not None and checks[op](st)
        if len(a) == 3:
            x, op, y = a
            if op in ("=", "=="):
                return x == y
            if op == "!=":
                return x != y
            nums = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__,
                    "-le": int.__le__, "-gt": int.__gt__, "-ge": int.__ge__}
            if op in nums:
                try:
                    return bool(nums[op](int(x), int(y)))
                except ValueError:
                    raise _Usage(f"{x if not x.lstrip('-').isdigit() else y}: "
                                 "integer expression expected") from None
            raise _Usage(f"{op}: binary operator expected")
        raise _Usage("too many arguments")

    # --- files: reading ---------------------------------------------------------------------

    def _inputs(self, cmd: str, files: list[str], rio: _IO) -> Iterator[tuple[str, bytes | None]]:
        if not files:
            yield "-", rio.stdin.read().encode("utf-8", "surrogateescape")
            return
        for f in files:
            if f == "-":
                yield f, rio.stdin.read().encode("utf-8", "surrogateescape")
                continue
            try:
                if self.is_dir(f):
                    raise IsADirectoryError(errno.EISDIR, "Is a directory")
                yield f, self.read_bytes(f)
            except OSError as e:
                if cmd in ("head", "tail"):
                    rio.stderr.write(f"{cmd}: cannot open '{f}' for reading: {_errmsg(e)}\n")
                else:
                    rio.stderr.write(f"{cmd}: {f}: {_errmsg(e)}\n")
                yield f, None

    def b_cat(self, args: list[str], rio: _IO) -> int:
        number = "-n" in args
        files = [a for a in args if a not in ("-n", "-A", "-v", "-e")]
        status = 0
        n = 0
        for _, data in self._inputs("cat", files, rio):
            if data is None:
                status = 1
                continue
            text = data.decode("utf-8", "surrogateescape")
            if number:
                lines = text.splitlines(keepends=True)
                text = ""
                for line in lines:
                    n += 1
                    text += f"{n:6}\t{line}"
            rio.stdout.write(text.encode("utf-8", "surrogateescape")
                             .decode("utf-8", "replace"))
        return status

    def _lines_opts(self, cmd: str, args: list[str]) -> tuple[int, list[str]]:
        count, files = 10, []
        it = iter(args)
        for a in it:
            if a == "-n":
                try:
                    count = int(next(it))
                except (StopIteration, ValueError):
                    raise _Usage(f"{cmd}: invalid number of lines") from None
            elif re.fullmatch(r"-n?\d+", a):
                count = int(a.lstrip("-n"))
            else:
                files.append(a)
        return count, files

    def b_head(self, args: list[str], rio: _IO) -> int:
        if "-c" in args:
            k = args.index("-c")
            try:
                nbytes = int(args[k + 1])
            except (IndexError, ValueError):
                rio.stderr.write("head: invalid number of bytes\n")
                return 1
            status = 0
            for _, data in self._inputs("head", args[:k] + args[k + 2:], rio):
                if data is None:
                    status = 1
                    continue
                rio.stdout.write(data[:nbytes].decode("utf-8", "replace"))
            return status
        count, files = self._lines_opts("head", args)
        status = 0
        for _, data in self._inputs("head", files, rio):
            if data is None:
                status = 1
                continue
            lines = data.decode("utf-8", "replace").splitlines(keepends=True)
            rio.stdout.write("".join(lines[:count]))
        return status

    def b_tail(self, args: list[str], rio: _IO) -> int:
        count, files = self._lines_opts("tail", args)
        status = 0
        for _, data in self._inputs("tail", files, rio):
            if data is None:
                status = 1
                continue
            lines = data.decode("utf-8", "replace").splitlines(keepends=True)
            rio.stdout.write("".join(lines[-count:] if count else []))
        return status

    def b_wc(self, args: list[str], rio: _IO) -> int:
        flags = "".join(a[1:] for a in args if a.startswith("-") and a != "-")
        files = [a for a in args if not a.startswith("-") or a == "-"]
        status = 0
        rows = []
        for name, data in self._inputs("wc", files, rio):
            if data is None:
                status = 1
                continue
            counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
            sel = [counts[k] for k in "lwc" if k in flags] or [counts[k] for k in "lwc"]
            rows.append((sel, name if files else ""))
        if len(rows) > 1:
            rows.append(([sum(col) for col in zip(*(sel for sel, _ in rows), strict=True)],
                         "total"))
        width = max((len(str(v)) for sel, _ in rows for v in sel), default=1)
        if len(rows) == 1 and len(rows[0][0]) == 1:
            width = 1  # a single count is printed unpadded, as GNU wc does
        for sel, name in rows:
            nums = " ".join(f"{v:{width}}" for v in sel)
            rio.stdout.write(nums + (f" {name}" if name else "") + "\n")
        return status

    def b_sort(self, args: list[str], rio: _IO) -> int:
        """``sort [-r] [-n] [-u] [FILE...]`` in the C locale's byte order."""
        opts = "".join(a[1:] for a in args if a.startswith("-") and len(a) > 1)
        files = [a for a in args if not (a.startswith("-") and len(a) > 1)]
        lines: list[str] = []
        status = 0
        for _, data in self._inputs("sort", files, rio):
            if data is None:
                status = 2
                continue
            lines.extend(data.decode("utf-8", "surrogateescape").splitlines())
        if "n" in opts:
            def num(line: str) -> tuple[float, str]:
                m = re.match(r"\s*(-?\d+(?:\.\d*)?)", line)
                return (float(m.group(1)) if m else 0.0, line)
            lines.sort(key=num, reverse="r" in opts)
        else:
            lines.sort(key=lambda x: x.encode("utf-8", "surrogateescape"),
                       reverse="r" in opts)
        if "u" in opts:
            lines = list(dict.fromkeys(lines))
        rio.stdout.write("".join(line + "\n" for line in lines)
                         .encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
        return status

    def b_grep(self, args: list[str], rio: _IO) -> int:
        opts, rest = set(), []
        for a in args:
            if a.startswith("-") and len(a) > 1 and not rest:
                opts.update(a[1:])
            else:
                rest.append(a)
        if not rest:
            rio.stderr.write("Usage: grep [OPTION]... PATTERNS [FILE]...\n")
            return 2
        pattern, files = rest[0], rest[1:]
        try:
            rx = re.compile(pattern if "F" not in opts else re.escape(pattern),
                            re.I if "i" in opts else 0)
        except re.error:
            rio.stderr.write("grep: Invalid regular expression\n")
            return 2
        found, status = False, 0
        for name, data in self._inputs("grep", files, rio):
            if data is None:
                status = 2
                continue
            count = 0
            for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                hit = bool(rx.search(line)) != ("v" in opts)
                if not hit:
                    continue
                found = True
                count += 1
                if "q" in opts or "c" in opts or "l" in opts:
                    continue
                prefix = f"{name}:" if len(files) > 1 else ""
                prefix += f"{i}:" if "n" in opts else ""
                rio.stdout.write(prefix + line + "\n")
            if "c" in opts:
                rio.stdout.write((f"{name}:" if len(files) > 1 else "") + f"{count}\n")
            if "l" in opts and count:
                rio.stdout.write(name + "\n")
        return status if status else (0 if found else 1)

    # --- ls ----------------------------------------------------------------------------------

    def b_ls(self, args: list[str], rio: _IO) -> int:
        opts: set[str] = set()
        paths: list[str] = []
        for a in args:
            if a.startswith("-") and len(a) > 1 and a != "--":
                if a.startswith("--"):
                    if a in ("--all",):
                        opts.add("a")
                    continue
                bad = set(a[1:]) - set("laAdR1hFitrS")
                if bad:
                    rio.stderr.write(f"ls: invalid option -- '{sorted(bad)[0]}'\n"
                                     "Try 'ls --help' for more information.\n")
                    return 2
                opts.update(a[1:])
            else:
                paths.append(a)
        explicit = bool(paths)
        paths = paths or ["."]
        status = 0
        files: list[tuple[str, Any]] = []
        dirs: list[str] = []
        for p in paths:
            st = self.lstat(p)
            if st is None:
                rio.stderr.write(f"ls: cannot access '{p}': No such file or directory\n")
                status = 2
                continue
            if _stat.S_ISLNK(st.st_mode) and "l" not in opts:
                target = self.stat(p)
                if target is not None and _stat.S_ISDIR(target.st_mode) and "d" not in opts:
                    dirs.append(p)
                    continue
            if _stat.S_ISDIR(st.st_mode) and "d" not in opts:
                dirs.append(p)
            else:
                files.append((p, st))
        if files:
            self._ls_entries(sorted(files), opts, rio, base=None)
        show_header = len(paths) > 1 or "R" in opts
        first = not files
        queue = sorted(dirs) if explicit else dirs
        while queue:
            d = queue.pop(0)
            if not first:
                rio.stdout.write("\n")
            first = False
            if show_header:
                rio.stdout.write(f"{d}:\n")
            try:
                names = self.fs.listdir(self.abspath(d))
            except OSError as e:
                rio.stderr.write(f"ls: cannot open directory '{d}': {_errmsg(e)}\n")
                status = 2
                continue
            if "a" in opts:
                names = [".", "..", *names]
            elif "A" not in opts:
                names = [n for n in names if not n.startswith(".")]
            entries = []
            for n in names:
                st = self.lstat(_join(d, n)) if n not in (".", "..") else \
                    self.stat(d if n == "." else posixpath.join(self.abspath(d), ".."))
                if st is not None:
                    entries.append((n, st))
            entries = self._ls_sort(entries, opts)
            if "l" in opts:
                total = sum(_blocks_k(st) for _, st in entries)
                rio.stdout.write(f"total {total}\n")
            self._ls_entries(entries, opts, rio, base=d)
            if "R" in opts:
                sub = [_join(d, n) for n, st in entries
                       if _stat.S_ISDIR(st.st_mode) and n not in (".", "..")]
                queue = sub + queue
        return status

    def _ls_sort(self, entries: list[tuple[str, Any]], opts: set[str]) -> list[tuple[str, Any]]:
        if "t" in opts:
            entries.sort(key=lambda e: (-_mtime_ns(e[1]), e[0]))
        elif "S" in opts:
            entries.sort(key=lambda e: (-e[1].st_size, e[0]))
        else:
            entries.sort(key=lambda e: e[0])  # C locale: byte order, as in a bare image
        if "r" in opts:
            entries.reverse()
        return entries

    def _ls_entries(self, entries: list[tuple[str, Any]], opts: set[str], rio: _IO,
                    base: str | None) -> None:
        def decorate(name: str, st: Any) -> str:
            if "F" not in opts:
                return name
            if _stat.S_ISDIR(st.st_mode):
                return name + "/"
            if _stat.S_ISLNK(st.st_mode):
                return name + "@"
            return name + ("*" if st.st_mode & 0o111 else "")

        if "l" not in opts:
            names = [decorate(n, st) for n, st in entries]
            if "1" in opts or not self.interactive:
                for n in names:
                    rio.stdout.write(n + "\n")
            elif names:
                rio.stdout.write(_columns(names, 80))
            return
        rows = []
        for name, st in entries:
            full = name if base is None else _join(base, name)
            link = ""
            if _stat.S_ISLNK(st.st_mode):
                try:
                    link = " -> " + self.fs.readlink(self.abspath(full))
                except OSError:
                    link = " -> ?"
            size = _human(st.st_size) if "h" in opts else str(st.st_size)
            if _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode):
                rdev = getattr(st, "st_rdev", 0)
                size = f"{os.major(rdev)}, {os.minor(rdev)}"
            rows.append((_stat.filemode(st.st_mode), str(st.st_nlink), self.user(st.st_uid),
                         self.group(st.st_gid), size, _ls_time(_mtime_ns(st)),
                         decorate(name, st) + link, str(getattr(st, "st_ino", 0))))
        widths = [max(len(r[k]) for r in rows) for k in range(8)] if rows else [0] * 8
        for r in rows:
            ino = f"{r[7]:>{widths[7]}} " if "i" in opts else ""
            rio.stdout.write(f"{ino}{r[0]} {r[1]:>{widths[1]}} {r[2]:<{widths[2]}} "
                             f"{r[3]:<{widths[3]}} {r[4]:>{widths[4]}} {r[5]} {r[6]}\n")

    # --- stat --------------------------------------------------------------------------------

    def b_stat(self, args: list[str], rio: _IO) -> int:
        follow = "-L" in args
        fmt = None
        files = []
        it = iter(args)
        for a in it:
            if a in ("-c", "--format"):
                fmt = next(it, "")
            elif a.startswith("--format="):
                fmt = a.split("=", 1)[1]
            elif a.startswith("-") and a != "-":
                continue
            else:
                files.append(a)
        if not files:
            rio.stderr.write("stat: missing operand\nTry 'stat --help' for more information.\n")
            return 1
        status = 0
        for f in files:
            try:
                p = self.abspath(f)
                st = self.fs.stat(p) if follow else self.fs.lstat(p)
            except OSError as e:
                rio.stderr.write(f"stat: cannot statx '{f}': {_errmsg(e)}\n")
                status = 1
                continue
            if fmt is not None:
                rio.stdout.write(_stat_format(fmt, f, st, self.user(st.st_uid),
                                              self.group(st.st_gid)) + "\n")
                continue
            kind = _kind_words(st)
            name = f"'{f}'"
            if _stat.S_ISLNK(st.st_mode):
                try:
                    name += f" -> '{self.fs.readlink(p)}'"
                except OSError:
                    pass
            blocks = getattr(st, "st_blocks", -(-st.st_size // 512))
            rio.stdout.write(
                f"  File: {name}\n"
                f"  Size: {st.st_size:<15} Blocks: {blocks:<10} IO Block: 4096   {kind}\n"
                f"Device: {getattr(st, 'st_dev', 0):x}h/{getattr(st, 'st_dev', 0)}d\t"
                f"Inode: {getattr(st, 'st_ino', 0):<11} Links: {st.st_nlink}\n"
                f"Access: ({st.st_mode & 0o7777:04o}/{_stat.filemode(st.st_mode)})  "
                f"Uid: ({st.st_uid:5}/{self.user(st.st_uid):>8})   "
                f"Gid: ({st.st_gid:5}/{self.group(st.st_gid):>8})\n"
                f"Access: {_full_time(getattr(st, 'st_atime_ns', _mtime_ns(st)))}\n"
                f"Modify: {_full_time(_mtime_ns(st))}\n"
                f"Change: {_full_time(getattr(st, 'st_ctime_ns', _mtime_ns(st)))}\n"
                f" Birth: -\n")
        return status

    # --- creating ----------------------------------------------------------------------------

    def b_touch(self, args: list[str], rio: _IO) -> int:
        files = [a for a in args if not a.startswith("-")]
        no_create = "-c" in args
        if not files:
            rio.stderr.write("touch: missing file operand\n"
                             "Try 'touch --help' for more information.\n")
            return 1
        status = 0
        now = time.time_ns()
        for f in files:
            p = self.abspath(f)
            try:
                if self.stat(f) is not None:
                    self.fs.utime(p, ns=(now, now))
                elif not no_create:
                    with self.fs.open(p, "ab"):
                        pass
            except OSError as e:
                rio.stderr.write(f"touch: cannot touch '{f}': {_errmsg(e)}\n")
                status = 1
        return status

    def b_mkdir(self, args: list[str], rio: _IO) -> int:
        parents = verbose = False
        mode = 0o755
        dirs = []
        it = iter(args)
        for a in it:
            if a in ("-m", "--mode"):
                mode = self._parse_mode(next(it, ""), 0o777, "mkdir")
            elif a.startswith("-") and len(a) > 1:
                parents = parents or "p" in a
                verbose = verbose or "v" in a
            else:
                dirs.append(a)
        if not dirs:
            rio.stderr.write("mkdir: missing operand\n"
                             "Try 'mkdir --help' for more information.\n")
            return 1
        status = 0
        for d in dirs:
            try:
                if parents:
                    for made in self._makedirs(self.abspath(d), mode):
                        if verbose:
                            rio.stdout.write(f"mkdir: created directory '{made}'\n")
                else:
                    self.fs.mkdir(self.abspath(d), mode)
                    if verbose:
                        rio.stdout.write(f"mkdir: created directory '{d}'\n")
            except OSError as e:
                rio.stderr.write(f"mkdir: cannot create directory '{d}': {_errmsg(e)}\n")
                status = 1
        return status

    def _makedirs(self, path: str, mode: int = 0o755) -> list[str]:
        made = []
        cur = ""
        for part in [p for p in path.split("/") if p]:
            cur += "/" + part
            st = self.stat(cur)
            if st is None:
                self.fs.mkdir(cur, mode)
                made.append(cur)
            elif not _stat.S_ISDIR(st.st_mode):
                raise FileExistsError(errno.EEXIST, "File exists", cur)
        return made

    def b_ln(self, args: list[str], rio: _IO) -> int:
        opts = "".join(a[1:] for a in args if a.startswith("-") and len(a) > 1)
        rest = [a for a in args if not (a.startswith("-") and len(a) > 1)]
        if not rest:
            rio.stderr.write("ln: missing file operand\n")
            return 1
        if len(rest) == 1:
            rest.append(posixpath.basename(rest[0].rstrip("/")))
        *targets, dest = rest
        status = 0
        for target in targets:
            link = dest
            if self.is_dir(dest) and "n" not in opts:
                link = _join(dest, posixpath.basename(target.rstrip("/")))
            lp = self.abspath(link)
            try:
                if "f" in opts and self.lstat(link) is not None and not self.is_dir_nofollow(
                        link):
                    self.fs.unlink(lp)
                if "s" in opts:
                    self.fs.symlink(target, lp)
                else:
                    if self.lstat(target) is None:
                        rio.stderr.write(f"ln: failed to access '{target}': "
                                         "No such file or directory\n")
                        status = 1
                        continue
                    self.fs.link(self.abspath(target), lp)
            except OSError as e:
                if "s" in opts:
                    rio.stderr.write(f"ln: failed to create symbolic link '{link}': "
                                     f"{_errmsg(e)}\n")
                else:
                    rio.stderr.write(f"ln: failed to create hard link '{link}' => "
                                     f"'{target}': {_errmsg(e)}\n")
                status = 1
        return status

    def b_readlink(self, args: list[str], rio: _IO) -> int:
        canon = any(a in ("-f", "-e", "-m") for a in args)
        files = [a for a in args if not a.startswith("-")]
        if not files:
            rio.stderr.write("readlink: missing operand\n")
            return 1
        status = 0
        for f in files:
            try:
                if canon:
                    rio.stdout.write(self.realpath(f) + "\n")
                else:
                    rio.stdout.write(self.fs.readlink(self.abspath(f)) + "\n")
            except OSError:
                status = 1  # readlink prints nothing for a non-link, as coreutils does
        return status

    def realpath(self, path: str) -> str:
        """``path`` with every symlink resolved inside ``fs`` (ELOOP after 40 links)."""
        parts = [p for p in self.abspath(path).split("/") if p]
        resolved = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            cand = _join(resolved, part)
            st = self.lstat(cand)
            if st is not None and _stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = self.fs.readlink(cand)
                base = "/" if target.startswith("/") else resolved
                parts = [p for p in target.split("/") if p] + parts
                resolved = base
                continue
            resolved = "/" + posixpath.normpath(cand).lstrip("/")
        return resolved

    def _id_names(self, path: str) -> dict[int, str]:
        """uid/gid -> name from the container's own /etc/passwd or /etc/group (cached)."""
        cache = self.__dict__.setdefault("_id_cache", {})
        if path not in cache:
            names: dict[int, str] = {}
            try:
                for line in self.read_bytes(path).decode("utf-8", "replace").splitlines():
                    fields = line.split(":")
                    if len(fields) > 2 and fields[2].isdigit():
                        names.setdefault(int(fields[2]), fields[0])
            except OSError:
                names = {0: "root"}
            cache[path] = names
        return cache[path]

    def b_chown(self, args: list[str], rio: _IO) -> int:
        """``chown [-R] [-h] OWNER[:GROUP] FILE...`` with names from the container's
        /etc/passwd and /etc/group, or numbers."""
        recursive = any(a in ("-R", "--recursive") for a in args)
        nofollow = "-h" in args
        rest = [a for a in args if not a.startswith("-")]
        if len(rest) < 2:
            rio.stderr.write("chown: missing operand\n"
                             "Try 'chown --help' for more information.\n")
            return 1
        spec, files = rest[0], rest[1:]
        owner, _, grp = spec.partition(":")

        def lookup(name: str, table: dict[int, str], what: str) -> int:
            if name.isdigit():
                return int(name)
            for k, v in table.items():
                if v == name:
                    return k
            raise _Usage(f"chown: invalid {what}: '{spec}'")

        try:
            uid = lookup(owner, self._id_names("/etc/passwd"), "user") if owner else -1
            gid = lookup(grp, self._id_names("/etc/group"), "group") if grp else -1
        except _Usage as e:
            rio.stderr.write(f"{e}\n")
            return 1
        status = 0
        for f in files:
            paths = [p for p, _ in self._walk(f)] if recursive else [f]
            if not paths or self.lstat(f) is None:
                rio.stderr.write(f"chown: cannot access '{f}': No such file or directory\n")
                status = 1
                continue
            for p in paths:
                try:
                    st = self.fs.lstat(self.abspath(p))
                    u = st.st_uid if uid < 0 else uid
                    g = st.st_gid if gid < 0 else gid
                    if nofollow or p != f:
                        if hasattr(self.fs, "lchown"):
                            self.fs.lchown(self.abspath(p), u, g)
                        elif not _stat.S_ISLNK(st.st_mode):
                            self.fs.chown(self.abspath(p), u, g)
                    else:
                        self.fs.chown(self.abspath(p), u, g)
                except OSError as e:
                    rio.stderr.write(f"chown: changing ownership of '{p}': {_errmsg(e)}\n")
                    status = 1
        return status

    def user(self, uid: int) -> str:
        return self._id_names("/etc/passwd").get(uid, str(uid))

    def group(self, gid: int) -> str:
        return self._id_names("/etc/group").get(gid, str(gid))

    def is_dir_nofollow(self, path: str) -> bool:
        st = self.lstat(path)
        return st is not None and _stat.S_ISDIR(st.st_mode)

    def b_chmod(self, args: list[str], rio: _IO) -> int:
        recursive = False
        rest = []
        for a in args:
            if a in ("-R", "--recursive"):
                recursive = True
            elif re.fullmatch(r"-[Rvcf]+", a):
                recursive = recursive or "R" in a
            else:
                rest.append(a)
        if len(rest) < 2:
            rio.stderr.write(f"chmod: missing operand{' after ' + repr(rest[0]) if rest else ''}"
                             "\nTry 'chmod --help' for more information.\n")
            return 1
        spec, files = rest[0], rest[1:]
        try:
            self._apply_mode(spec, 0, False)
        except _Usage:
            rio.stderr.write(f"chmod: invalid mode: '{spec}'\n"
                             "Try 'chmod --help' for more information.\n")
            return 1
        status = 0
        for f in files:
            paths = [f]
            if recursive and self.is_dir_nofollow(f):
                paths = [p for p, _ in self._walk(f)]
            for p in paths:
                st = self.stat(p)
                if st is None:
                    rio.stderr.write(f"chmod: cannot access '{p}': No such file or directory\n")
                    status = 1
                    continue
                try:
                    mode = self._apply_mode(spec, st.st_mode & 0o7777,
                                            _stat.S_ISDIR(st.st_mode))
                    self.fs.chmod(self.abspath(p), mode)
                except _Usage:
                    rio.stderr.write(f"chmod: invalid mode: '{spec}'\n"
                                     "Try 'chmod --help' for more information.\n")
                    return 1
                except OSError as e:
                    rio.stderr.write(f"chmod: changing permissions of '{p}': {_errmsg(e)}\n")
                    status = 1
        return status

    def _parse_mode(self, spec: str, base: int, cmd: str) -> int:
        try:
            return self._apply_mode(spec, base, True)
        except _Usage:
            raise _Usage(f"{cmd}: invalid mode '{spec}'") from None

    @staticmethod
    def _apply_mode(spec: str, mode: int, is_dir: bool) -> int:
        if re.fullmatch(r"[0-7]{1,4}", spec):
            return int(spec, 8)
        for clause in spec.split(","):
            m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
            if not m:
                raise _Usage(spec)
            who = m.group(1) or "a"
            if "a" in who:
                who = "ugo"
            bits = 0
            for ch in m.group(3):
                for w in who:
                    shift = {"u": 6, "g": 3, "o": 0}[w]
                    if ch == "r":
                        bits |= 4 << shift
                    elif ch == "w":
                        bits |= 2 << shift
                    elif ch == "x" or (ch == "X" and (is_dir or mode & 0o111)):
                        bits |= 1 << shift
                    elif ch == "s" and w in "ug":
                        bits |= _stat.S_ISUID if w == "u" else _stat.S_ISGID
                    elif ch == "t":
                        bits |= _stat.S_ISVTX
            mask = 0
            for w in who:
                mask |= 0o7 << {"u": 6, "g": 3, "o": 0}[w]
            if m.group(2) == "+":
                mode |= bits
            elif m.group(2) == "-":
                mode &= ~bits
            else:
                mode = (mode & ~mask) | bits
        return mode

    # --- removing ----------------------------------------------------------------------------

    def b_rm(self, args: list[str], rio: _IO) -> int:
        recursive = force = verbose = rmdirs = False
        preserve_root = True
        files = []
        opts_done = False
        for a in args:
            if not opts_done and a == "--":
                opts_done = True
            elif not opts_done and a == "--no-preserve-root":
                preserve_root = False
            elif not opts_done and a in ("--recursive", "--force"):
                recursive = recursive or a == "--recursive"
                force = force or a == "--force"
            elif not opts_done and a.startswith("-") and len(a) > 1:
                bad = set(a[1:]) - set("rRfvdi")
                if bad:
                    rio.stderr.write(f"rm: invalid option -- '{sorted(bad)[0]}'\n"
                                     "Try 'rm --help' for more information.\n")
                    return 1
                recursive = recursive or "r" in a or "R" in a
                force = force or "f" in a
                verbose = verbose or "v" in a
                rmdirs = rmdirs or "d" in a
            else:
                files.append(a)
        if not files:
            if force:
                return 0
            rio.stderr.write("rm: missing operand\nTry 'rm --help' for more information.\n")
            return 1
        status = 0
        for f in files:
            p = self.abspath(f)
            if recursive and posixpath.basename(f.rstrip("/")) in (".", ".."):
                rio.stderr.write(f"rm: refusing to remove '.' or '..' directory: "
                                 f"skipping '{f}'\n")
                status = 1
                continue
            if recursive and p == "/" and preserve_root:
                rio.stderr.write(f"rm: it is dangerous to operate recursively on '{f}'\n"
                                 "rm: use --no-preserve-root to override this failsafe\n")
                status = 1
                continue
            st = self.lstat(f)
            if st is None:
                if not force:
                    rio.stderr.write(f"rm: cannot remove '{f}': No such file or directory\n")
                    status = 1
                continue
            if _stat.S_ISDIR(st.st_mode):
                if not recursive:
                    if rmdirs:
                        try:
                            self.fs.rmdir(p)
                            continue
                        except OSError as e:
                            rio.stderr.write(f"rm: cannot remove '{f}': {_errmsg(e)}\n")
                            status = 1
                            continue
                    rio.stderr.write(f"rm: cannot remove '{f}': Is a directory\n")
                    status = 1
                    continue
                if not self._rm_tree(f, rio, verbose):
                    status = 1
                continue
            try:
                self.fs.unlink(p)
                if verbose:
                    rio.stdout.write(f"removed '{f}'\n")
            except OSError as e:
                rio.stderr.write(f"rm: cannot remove '{f}': {_errmsg(e)}\n")
                status = 1
        return status

    def _rm_tree(self, top: str, rio: _IO, verbose: bool) -> bool:
        ok = True
        try:
            names = sorted(self.fs.listdir(self.abspath(top)))
        except OSError as e:
            rio.stderr.write(f"rm: cannot remove '{top}': {_errmsg(e)}\n")
            return False
        for n in names:
            child = _join(top, n)
            st = self.lstat(child)
            if st is None:
                continue
            if _stat.S_ISDIR(st.st_mode):
                ok = self._rm_tree(child, rio, verbose) and ok
            else:
                try:
                    self.fs.unlink(self.abspath(child))
                    if verbose:
                        rio.stdout.write(f"removed '{child}'\n")
                except OSError as e:
                    rio.stderr.write(f"rm: cannot remove '{child}': {_errmsg(e)}\n")
                    ok = False
        try:
            self.fs.rmdir(self.abspath(top))
            if verbose:
                rio.stdout.write(f"removed directory '{top}'\n")
        except OSError as e:
            rio.stderr.write(f"rm: cannot remove '{top}': {_errmsg(e)}\n")
            ok = False
        return ok

    def b_rmdir(self, args: list[str], rio: _IO) -> int:
        parents = "-p" in args
        dirs = [a for a in args if not a.startswith("-")]
        if not dirs:
            rio.stderr.write("rmdir: missing operand\n")
            return 1
        status = 0
        for d in dirs:
            chain = [d]
            if parents:
                cur = d.rstrip("/")
                while "/" in cur.strip("/"):
                    cur = posixpath.dirname(cur)
                    chain.append(cur)
            for c in chain:
                try:
                    self.fs.rmdir(self.abspath(c))
                except OSError as e:
                    rio.stderr.write(f"rmdir: failed to remove '{c}': {_errmsg(e)}\n")
                    status = 1
                    break
        return status

    # --- copying and moving ------------------------------------------------------------------

    def _walk(self, top: str) -> Iterator[tuple[str, Any]]:
        """(path, lstat) for ``top`` and everything below it, parents first, sorted."""
        st = self.lstat(top)
        if st is None:
            return
        yield top, st
        if _stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(self.fs.listdir(self.abspath(top)))
            except OSError:
                return
            for n in names:
                yield from self._walk(_join(top, n))

    def _copy_file(self, src: str, dst: str, mode: int | None) -> None:
        with self.fs.open(self.abspath(src), "rb") as fin, \
                self.fs.open(self.abspath(dst), "wb") as fout:
            while True:
                chunk = fin.read(_CHUNK)
                if not chunk:
                    break
                fout.write(chunk)
        if mode is not None:
            self.fs.chmod(self.abspath(dst), mode)

    def _copy(self, cmd: str, src: str, dst: str, recursive: bool, archive: bool,
              rio: _IO) -> bool:
        st = self.lstat(src) if (archive or recursive) else self.stat(src)
        if st is None:
            rio.stderr.write(f"{cmd}: cannot stat '{src}': No such file or directory\n")
            return False
        if _stat.S_ISDIR(st.st_mode):
            if not recursive:
                rio.stderr.write(f"{cmd}: -r not specified; omitting directory '{src}'\n")
                return False
            sp, dp = self.abspath(src), self.abspath(dst)
            if dp == sp or dp.startswith(sp + "/"):
                rio.stderr.write(f"{cmd}: cannot copy a directory, '{src}', into itself, "
                                 f"'{dst}'\n")
                return False
            ok = True
            for path, est in list(self._walk(src)):
                rel = self.abspath(path)[len(sp):]
                target = dp + rel
                try:
                    if _stat.S_ISDIR(est.st_mode):
                        tst = self.lstat(target)
                        if tst is None:
                            self.fs.mkdir(target, est.st_mode & 0o7777)
                        elif not _stat.S_ISDIR(tst.st_mode):
                            raise FileExistsError(errno.EEXIST, "File exists", target)
                    else:
                        ok = self._copy_one(cmd, path, target, est, archive, rio) and ok
                except OSError as e:
                    rio.stderr.write(f"{cmd}: cannot create directory '{target}': "
                                     f"{_errmsg(e)}\n")
                    ok = False
            if archive:
                for path, est in self._walk(src):
                    if _stat.S_ISDIR(est.st_mode):
                        target = dp + self.abspath(path)[len(sp):]
                        with contextlib.suppress(OSError):
                            self.fs.chmod(target, est.st_mode & 0o7777)
                            self.fs.utime(target, ns=(_mtime_ns(est), _mtime_ns(est)))
            return ok
        return self._copy_one(cmd, src, dst, st, archive, rio)

    def _copy_one(self, cmd: str, src: str, dst: str, st: Any, archive: bool, rio: _IO) -> bool:
        try:
            if self.abspath(src) == self.abspath(dst):
                rio.stderr.write(f"{cmd}: '{src}' and '{dst}' are the same file\n")
                return False
            if _stat.S_ISLNK(st.st_mode):
                if self.lstat(dst) is not None:
                    self.fs.unlink(self.abspath(dst))
                self.fs.symlink(self.fs.readlink(self.abspath(src)), self.abspath(dst))
                return True
            if not _stat.S_ISREG(st.st_mode):
                rio.stderr.write(f"{cmd}: cannot copy special file '{src}'\n")
                return False
            existed = self.lstat(dst) is not None
            self._copy_file(src, dst, st.st_mode & 0o7777 if (archive or not existed) else None)
            if archive:
                self.fs.utime(self.abspath(dst), ns=(_mtime_ns(st), _mtime_ns(st)))
            return True
        except OSError as e:
            verb = "cannot create regular file" if e.errno != errno.ENOENT or \
                self.lstat(src) is not None else "cannot open"
            rio.stderr.write(f"{cmd}: {verb} '{dst}': {_errmsg(e)}\n")
            return False

    def _operands(self, cmd: str, args: list[str], allowed: str,
                  rio: _IO) -> tuple[set[str], list[str]] | None:
        opts: set[str] = set()
        rest = []
        done = False
        for a in args:
            if not done and a == "--":
                done = True
            elif not done and a.startswith("--"):
                long = {"--recursive": "r", "--archive": "a", "--force": "f",
                        "--verbose": "v", "--no-clobber": "n"}
                if a in long:
                    opts.add(long[a])
            elif not done and a.startswith("-") and len(a) > 1:
                bad = set(a[1:]) - set(allowed)
                if bad:
                    rio.stderr.write(f"{cmd}: invalid option -- '{sorted(bad)[0]}'\n"
                                     f"Try '{cmd} --help' for more information.\n")
                    return None
                opts.update(a[1:])
            else:
                rest.append(a)
        if not rest:
            rio.stderr.write(f"{cmd}: missing file operand\n"
                             f"Try '{cmd} --help' for more information.\n")
            return None
        if len(rest) == 1:
            rio.stderr.write(f"{cmd}: missing destination file operand after '{rest[0]}'\n"
                             f"Try '{cmd} --help' for more information.\n")
            return None
        return opts, rest

    def b_cp(self, args: list[str], rio: _IO) -> int:
        parsed = self._operands("cp", args, "rRafpvndPLT", rio)
        if parsed is None:
            return 1
        opts, rest = parsed
        recursive = bool(opts & {"r", "R", "a"})
        archive = "a" in opts or "p" in opts
        return self._each_source(
            "cp", opts, rest, rio, "'{0}' -> '{1}'",
            lambda src, target: self._copy("cp", src, target, recursive, archive, rio))

    def b_mv(self, args: list[str], rio: _IO) -> int:
        parsed = self._operands("mv", args, "fvniT", rio)
        if parsed is None:
            return 1
        opts, rest = parsed
        return self._each_source("mv", opts, rest, rio, "renamed '{0}' -> '{1}'",
                                 lambda src, target: self._move(src, target, rio))

    def _each_source(self, cmd: str, opts: set[str], rest: list[str], rio: _IO, verbose: str,
                     act: Callable[[str, str], bool]) -> int:
        """``cp``/``mv`` SRC... DEST: ``act(src, target)`` for each source, where target is
        DEST itself or DEST/basename(src) when DEST is a directory; ``-n`` skips existing
        targets, ``-v`` prints ``verbose`` formatted with (src, target)."""
        *srcs, dest = rest
        dest_is_dir = self.is_dir(dest)
        if len(srcs) > 1 and not dest_is_dir:
            why = "Not a directory" if self.lstat(dest) else "No such file or directory"
            rio.stderr.write(f"{cmd}: target '{dest}': {why}\n")
            return 1
        status = 0
        for src in srcs:
            target = _join(dest, posixpath.basename(src.rstrip("/"))) if dest_is_dir else dest
            if "n" in opts and self.lstat(target) is not None:
                continue
            if not act(src, target):
                status = 1
            elif "v" in opts:
                rio.stdout.write(verbose.format(src, target) + "\n")
        return status

    def _move(self, src: str, dst: str, rio: _IO) -> bool:
        st = self.lstat(src)
        if st is None:
            rio.stderr.write(f"mv: cannot stat '{src}': No such file or directory\n")
            return False
        sp, dp = self.abspath(src), self.abspath(dst)
        if sp == dp:
            rio.stderr.write(f"mv: '{src}' and '{dst}' are the same file\n")
            return False
        if _stat.S_ISDIR(st.st_mode) and dp.startswith(sp + "/"):
            rio.stderr.write(f"mv: cannot move '{src}' to a subdirectory of itself, "
                             f"'{dst}'\n")
            return False
        try:
            self.fs.rename(sp, dp)
            return True
        except OSError as e:
            if e.errno != errno.EXDEV:
                rio.stderr.write(f"mv: cannot move '{src}' to '{dst}': {_errmsg(e)}\n")
                return False
        # EXDEV: overlayfs without redirect_dir refuses to rename a directory that comes from
        # a lower layer. Real mv then copies and deletes, and so do we: every file is copied
        # up into the new name and the old name gets a whiteout.
        dst_st = self.lstat(dst)
        if dst_st is not None:
            if _stat.S_ISDIR(dst_st.st_mode):
                try:
                    if self.fs.listdir(dp):
                        raise OSError(errno.ENOTEMPTY, "Directory not empty", dp)
                    self.fs.rmdir(dp)
                except OSError as e:
                    rio.stderr.write(f"mv: cannot move '{src}' to '{dst}': {_errmsg(e)}\n")
                    return False
            else:
                self.fs.unlink(dp)
        quiet = _IO(rio.stdin, io.StringIO(), rio.stderr)
        if not self._copy("mv", src, dst, True, True, quiet):
            return False
        if _stat.S_ISDIR(st.st_mode):
            return self._rm_tree(src, rio, False)
        try:
            self.fs.unlink(sp)
        except OSError as e:
            rio.stderr.write(f"mv: cannot remove '{src}': {_errmsg(e)}\n")
            return False
        return True

    # --- find, du, tree ----------------------------------------------------------------------

    def b_find(self, args: list[str], rio: _IO) -> int:
        roots = []
        i = 0
        while i < len(args) and not args[i].startswith("-") and args[i] not in ("!", "("):
            roots.append(args[i])
            i += 1
        roots = roots or ["."]
        preds: list[Callable[[str, Any, int], bool]] = []
        maxdepth, mindepth = None, 0
        expr = args[i:]
        j = 0
        negate = False
        while j < len(expr):
            a = expr[j]
            val = expr[j + 1] if j + 1 < len(expr) else None
            if a == "!" or a == "-not":
                negate = True
                j += 1
                continue
            pred: Callable[[str, Any, int], bool] | None = None
            if a in ("-name", "-iname") and val is not None:
                pat = val
                ci = a == "-iname"
                def pred(p, st, d, pat=pat, ci=ci):
                    name = posixpath.basename(p) or p
                    return fnmatch.fnmatchcase(name.lower() if ci else name,
                                               pat.lower() if ci else pat)
                j += 2
            elif a == "-path" and val is not None:
                def pred(p, st, d, pat=val):
                    return fnmatch.fnmatchcase(p, pat)
                j += 2
            elif a == "-type" and val is not None:
                test = {"f": _stat.S_ISREG, "d": _stat.S_ISDIR, "l": _stat.S_ISLNK,
                        "c": _stat.S_ISCHR, "b": _stat.S_ISBLK, "p": _stat.S_ISFIFO,
                        "s": _stat.S_ISSOCK}.get(val)
                if test is None:
                    rio.stderr.write(f"find: Unknown argument to -type: {val}\n")
                    return 1
                def pred(p, st, d, test=test):
                    return bool(test(st.st_mode))
                j += 2
            elif a == "-maxdepth" and val is not None:
                maxdepth = int(val)
                j += 2
                continue
            elif a == "-mindepth" and val is not None:
                mindepth = int(val)
                j += 2
                continue
            elif a == "-empty":
                def pred(p, st, d):
                    if _stat.S_ISDIR(st.st_mode):
                        return not self.fs.listdir(self.abspath(p))
                    return _stat.S_ISREG(st.st_mode) and st.st_size == 0
                j += 1
            elif a in ("-print", "-a", "-and"):
                j += 1
                continue
            else:
                rio.stderr.write(f"find: unknown predicate `{a}'\n")
                return 1
            if negate:
                inner = pred
                def pred(p, st, d, inner=inner):
                    return not inner(p, st, d)
                negate = False
            preds.append(pred)
        status = 0
        for root in roots:
            if self.lstat(root) is None:
                rio.stderr.write(f"find: '{root}': No such file or directory\n")
                status = 1
                continue
            for path, st, depth in self._walk_depth(root, maxdepth):
                if depth >= mindepth and all(p(path, st, depth) for p in preds):
                    rio.stdout.write(path + "\n")
        return status

    def _walk_depth(self, top: str, maxdepth: int | None,
                    depth: int = 0) -> Iterator[tuple[str, Any, int]]:
        st = self.lstat(top)
        if st is None:
            return
        yield top, st, depth
        if _stat.S_ISDIR(st.st_mode) and (maxdepth is None or depth < maxdepth):
            try:
                names = sorted(self.fs.listdir(self.abspath(top)))
            except OSError:
                return
            for n in names:
                yield from self._walk_depth(_join(top, n), maxdepth, depth + 1)

    def b_du(self, args: list[str], rio: _IO) -> int:
        opts = "".join(a[1:] for a in args if a.startswith("-") and len(a) > 1)
        paths = [a for a in args if not (a.startswith("-") and len(a) > 1)] or ["."]
        human, summary, all_files = "h" in opts, "s" in opts, "a" in opts
        status = 0
        grand = 0

        def show(k: int, p: str) -> None:
            rio.stdout.write(f"{_human(k * 1024) if human else k}\t{p}\n")

        def total(p: str, st: Any, depth: int) -> int:
            k = _blocks_k(st)
            if _stat.S_ISDIR(st.st_mode):
                try:
                    names = sorted(self.fs.listdir(self.abspath(p)))
                except OSError:
                    names = []
                for n in names:
                    child = _join(p, n)
                    cst = self.lstat(child)
                    if cst is not None:
                        k += total(child, cst, depth + 1)
                if not summary or depth == 0:
                    if depth == 0 and summary:
                        return k
                    show(k, p)
            elif all_files and not summary:
                show(k, p)
            return k

        for root in paths:
            st = self.lstat(root)
            if st is None:
                rio.stderr.write(f"du: cannot access '{root}': No such file or directory\n")
                status = 1
                continue
            k = total(root, st, 0)
            grand += k
            if summary or (not _stat.S_ISDIR(st.st_mode) and not all_files):
                show(k, root)
        if "c" in opts:
            show(grand, "total")
        return status

    def b_tree(self, args: list[str], rio: _IO) -> int:
        """Only once the ``tree`` package is installed (its script calls the hidden builtin
        ``__imagesim_tree``); otherwise ``tree: command not found`` as on a real image."""
        show_all = "-a" in args
        paths = [a for a in args if not a.startswith("-")] or ["."]
        ndirs = nfiles = 0

        def walk(p: str, prefix: str) -> None:
            nonlocal ndirs, nfiles
            try:
                names = sorted(self.fs.listdir(self.abspath(p)))
            except OSError:
                return
            if not show_all:
                names = [n for n in names if not n.startswith(".")]
            for k, n in enumerate(names):
                last = k == len(names) - 1
                child = _join(p, n)
                st = self.lstat(child)
                if st is None:
                    continue
                label = n
                if _stat.S_ISLNK(st.st_mode):
                    with contextlib.suppress(OSError):
                        label += " -> " + self.fs.readlink(self.abspath(child))
                rio.stdout.write(prefix + ("└── " if last else "├── ") + label + "\n")
                if _stat.S_ISDIR(st.st_mode):
                    ndirs += 1
                    walk(child, prefix + ("    " if last else "│   "))
                else:
                    nfiles += 1

        for p in paths:
            rio.stdout.write(p + "\n")
            walk(p, "")
        rio.stdout.write(f"\n{ndirs} director{'y' if ndirs == 1 else 'ies'}, "
                         f"{nfiles} file{'' if nfiles == 1 else 's'}\n")
        return 0

    def dispatch_missing(self, name: str) -> int:
        self.error(f"{name}: command not found" if self.name == "bash" or self.interactive
                   else f"{name}: not found")
        return 127

    # --- packages ----------------------------------------------------------------------------

    def _ask(self, prompt: str) -> str | None:
        self.io.stdout.write(prompt)
        line = self.io.stdin.readline()
        return line if line else None

    def b_apt_get(self, args: list[str], rio: _IO) -> int:
        return packages.apt_get(self.fs, args, rio.stdout, rio.stderr, self._ask)

    def b_apt(self, args: list[str], rio: _IO) -> int:
        rio.stderr.write("\nWARNING: apt does not have a stable CLI interface. "
                         "Use with caution in scripts.\n\n")
        return packages.apt_get(self.fs, args, rio.stdout, rio.stderr, self._ask)

    def b_apk(self, args: list[str], rio: _IO) -> int:
        return packages.apk(self.fs, args, rio.stdout, rio.stderr)

    def b_dpkg(self, args: list[str], rio: _IO) -> int:
        return packages.dpkg(self.fs, args, rio.stdout, rio.stderr)

    def b_dpkg_query(self, args: list[str], rio: _IO) -> int:
        return packages.dpkg(self.fs, args, rio.stdout, rio.stderr)


# ============================================================================================
# formatting helpers
# ============================================================================================

def _join(base: str, name: str) -> str:
    if not base:
        return name
    return base.rstrip("/") + "/" + name if base != "/" else "/" + name


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _glob_unescape(text: str) -> str:
    return re.sub(r"\[([*?\[])\]", r"\1", text)


def _unescape(text: str) -> tuple[str, bool]:
    """Backslash escapes of echo -e / printf; returns (text, saw \\c)."""
    out, i = [], 0
    table = {"n": "\n", "t": "\t", "\\": "\\", "a": "\a", "b": "\b", "r": "\r",
             "v": "\v", "f": "\f", "e": "\x1b"}
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "c":
                return "".join(out), True
            if nxt in table:
                out.append(table[nxt])
                i += 2
                continue
            if nxt == "0":
                m = re.match(r"0([0-7]{0,3})", text[i + 1:])
                out.append(chr(int(m.group(1) or "0", 8)))  # type: ignore[union-attr]
                i += 1 + len(m.group(0))  # type: ignore[union-attr]
                continue
        out.append(c)
        i += 1
    return "".join(out), False


def _mtime_ns(st: Any) -> int:
    ns = getattr(st, "st_mtime_ns", None)
    if ns is None:
        ns = int(getattr(st, "st_mtime", 0) * 1e9)
    return int(ns)


def _blocks_k(st: Any) -> int:
    """Disk usage in KiB as du counts it: allocated blocks when the fs reports them,
    otherwise the size rounded up to 4 KiB blocks (directories one block)."""
    blocks = getattr(st, "st_blocks", None)
    if blocks:
        return int(blocks) // 2
    if _stat.S_ISDIR(st.st_mode):
        return 4
    if _stat.S_ISLNK(st.st_mode):
        return 0
    return -(-st.st_size // 4096) * 4


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            if unit == "":
                return str(int(n))
            return f"{n:.1f}{unit}" if n < 10 else f"{round(n):.0f}{unit}"
        n /= 1024
    return str(n)


def _ls_time(ns: int) -> str:
    t = time.gmtime(ns / 1e9)
    six_months = 182 * 24 * 3600
    if abs(time.time() - ns / 1e9) > six_months:
        return time.strftime("%b %e  %Y", t)
    return time.strftime("%b %e %H:%M", t)


def _full_time(ns: int) -> str:
    t = time.gmtime(ns // 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ns % 1_000_000_000:09d} +0000"


def _kind_words(st: Any) -> str:
    m = st.st_mode
    if _stat.S_ISREG(m):
        return "regular empty file" if st.st_size == 0 else "regular file"
    return {_stat.S_IFDIR: "directory", _stat.S_IFLNK: "symbolic link",
            _stat.S_IFCHR: "character special file", _stat.S_IFBLK: "block special file",
            _stat.S_IFIFO: "fifo", _stat.S_IFSOCK: "socket"}.get(_stat.S_IFMT(m), "unknown")


def _stat_format(fmt: str, name: str, st: Any, user: str, group: str) -> str:
    table = {
        "n": name, "s": str(st.st_size), "a": f"{st.st_mode & 0o7777:o}",
        "A": _stat.filemode(st.st_mode), "F": _kind_words(st), "u": str(st.st_uid),
        "g": str(st.st_gid), "U": user, "G": group,
        "h": str(st.st_nlink), "i": str(getattr(st, "st_ino", 0)),
        "Y": str(_mtime_ns(st) // 1_000_000_000), "y": _full_time(_mtime_ns(st)),
        "f": f"{st.st_mode:x}", "%": "%",
    }
    return re.sub(r"%(.)", lambda m: table.get(m.group(1), m.group(0)), fmt)


def _columns(names: list[str], width: int) -> str:
    longest = max(len(n) for n in names) + 2
    per_row = max(1, width // longest)
    rows = -(-len(names) // per_row)
    lines = []
    for r in range(rows):
        cells = [names[c * rows + r] for c in range(per_row) if c * rows + r < len(names)]
        lines.append("".join(c.ljust(longest) for c in cells[:-1]) + cells[-1])
    return "\n".join(lines) + "\n"


# ============================================================================================
# entry point
# ============================================================================================

def _describe_event(event: Any) -> str:
    """One trace line for an engine event (``unionfs.trace.Event``: kind, path, layer,
    reason); other event types are printed as they render themselves."""
    kind = getattr(event, "kind", None)
    path = getattr(event, "path", None)
    if kind is None or path is None:
        return f"[trace] {event}"
    kind = str(getattr(kind, "value", kind)).replace("_", "-")
    layer = getattr(event, "layer", "")
    reason = getattr(event, "reason", "")
    return f"[trace] {kind:<9} {path}" + (f"  [{layer}]" if layer else "") + \
        (f" {reason}" if reason else "")


@contextlib.contextmanager
def _tracing(fs: Any, stream: TextIO, enabled: bool) -> Iterator[None]:
    target = fs
    if getattr(fs, "subscribe", None) is None:
        # a container's mount table: the events come from the union under its root mount
        root = getattr(fs, "root", None)
        target = getattr(root, "fs", None) or getattr(fs, "fs", None) or fs
    subscribe = getattr(target, "subscribe", None)
    fs = target
    if not enabled or subscribe is None:
        if enabled:
            stream.write("[trace] this filesystem does not report copy-ups and whiteouts\n")
        yield
        return

    def on_event(event: Any) -> None:
        stream.write(_describe_event(event) + "\n")
        with contextlib.suppress(Exception):
            stream.flush()

    handle = subscribe(on_event)
    try:
        yield
    finally:
        unsubscribe = getattr(fs, "unsubscribe", None)
        if callable(handle):
            handle()
        elif unsubscribe is not None:
            with contextlib.suppress(Exception):
                unsubscribe(on_event)
        elif hasattr(handle, "close"):
            handle.close()


def run(fs: Any, *, argv: Sequence[str] = ("sh",), env: Mapping[str, str] | None = None,
        workdir: str = "/", hostname: str = "localhost", stdin: TextIO | None = None,
        stdout: TextIO | None = None, stderr: TextIO | None = None,
        interactive: bool | None = None, trace: bool = False) -> int:
    """Run the built-in shell (or one command) on the os-shaped filesystem ``fs``.

    ``argv``: ``["sh"]`` reads commands from ``stdin`` (a prompt ``root@HOSTNAME:DIR# `` on
    ``stderr`` when ``interactive``, which defaults to ``stdin.isatty()``);
    ``["sh", "-c", "CMDS", ARG0, ARGS...]`` runs CMDS; ``["sh", "FILE", ARGS...]`` runs a
    script file from ``fs``; a non-shell ``argv`` (``["ls", "-l"]``) runs that one command.
    ``env`` is the container's environment (``PATH``, ``HOME`` defaulted), ``workdir`` the
    image's ``WorkingDir``, ``hostname`` the short container id. With ``trace`` every
    copy-up and whiteout the engine reports (``fs.subscribe``) is printed to ``stderr``.

    Returns the exit status as a POSIX shell would: 0 success, 1 general failure, 2 syntax
    error or bad usage, 126 not executable, 127 command not found, else the last command's
    status. Filesystem errors never escape: they are reported as the tool would report them.
    """
    import sys

    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    argv = list(argv) or ["sh"]
    if interactive is None:
        try:
            interactive = stdin.isatty()
        except (AttributeError, ValueError):
            interactive = False
    name = argv[0]
    try:
        with _tracing(fs, stderr, trace):
            return _run(fs, argv, name, env, workdir, hostname, stdin, stdout, stderr,
                        interactive)
    except BrokenPipeError:
        return 128 + 13  # killed by SIGPIPE, as a real shell whose reader went away


def _run(fs: Any, argv: list[str], name: str, env: Mapping[str, str] | None, workdir: str,
         hostname: str, stdin: TextIO, stdout: TextIO, stderr: TextIO,
         interactive: bool) -> int:
    """The body of ``run``: pick the form of invocation and run it."""
    if not is_shell(argv):
        sh = Shell(fs, env=env, workdir=workdir, hostname=hostname, name="sh",
                   stdin=stdin, stdout=stdout, stderr=stderr)
        try:
            return sh.dispatch(list(argv), sh.io)
        except _Exit as e:
            return e.status
    base = posixpath.basename(name)
    args = argv[1:]
    opts_interactive = False
    while args and args[0].startswith("-") and args[0] not in ("-c", "-", "--"):
        opts_interactive = opts_interactive or "i" in args[0]
        args = args[1:]  # -l, -e, -x, -i: accepted
    if args and args[0] == "--":
        args = args[1:]
    sh = Shell(fs, env=env, workdir=workdir, hostname=hostname, name=base,
               stdin=stdin, stdout=stdout, stderr=stderr,
               interactive=bool(interactive) and not (args and args[0] == "-c"))
    if args and args[0] == "-c":
        if len(args) < 2:
            sh.error("-c: option requires an argument")
            return 2
        sh.vars["0"] = args[2] if len(args) > 2 else base
        sh.positional = args[3:]
        return sh.run_script(args[1])
    if args and args[0] != "-":
        try:
            text = sh.read_bytes(args[0]).decode("utf-8", "replace")
        except OSError as e:
            sh.error(f"{args[0]}: {_errmsg(e)}" if base == "bash"
                     else f"cannot open {args[0]}: {_errmsg(e)}")
            return 127 if e.errno == errno.ENOENT else 126
        sh.vars["0"] = args[0]
        sh.positional = args[1:]
        return sh.run_script(text)
    return _repl(sh, interactive=bool(interactive) or opts_interactive)


def _real_tty(stream: Any) -> bool:
    try:
        return stream.fileno() == 0 and os.isatty(0)
    except (AttributeError, ValueError, OSError):
        return False


def _repl(sh: Shell, interactive: bool) -> int:
    """Read commands line by line (joining lines while a quote or operator is open). On the
    process's own terminal, lines are read with ``input()`` (line editing and history)."""
    sh.interactive = interactive
    use_input = interactive and _real_tty(sh.io.stdin)
    if use_input:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (enables editing and history for input())
    buf = ""
    while True:
        prompt = sh.prompt() if not buf else "> "
        try:
            if use_input:
                try:
                    line = input(prompt) + "\n"
                except EOFError:
                    line = ""
            else:
                if interactive:
                    sh.io.stderr.write(prompt)
                    with contextlib.suppress(Exception):
                        sh.io.stderr.flush()
                line = sh.io.stdin.readline()
        except KeyboardInterrupt:
            # Ctrl-C drops the line being typed, as bash does, and the shell goes on
            sh.io.stderr.write("^C\n")
            buf = ""
            sh.status = 130
            continue
        if not line:
            if buf:
                sh.error("syntax error: unexpected end of file")
                return 2
            if interactive:
                sh.io.stderr.write("exit\n")
            return sh.status
        sh.lineno += 1
        buf += line
        try:
            parse(buf)
        except ShellSyntaxError as e:
            if e.incomplete:
                continue
        text, buf = buf, ""
        sh.base_line = sh.lineno - text.count("\n")
        try:
            sh.execute(text)
        except _Exit as e:
            return e.status
        except _Return as r:
            sh.status = r.status
        except KeyboardInterrupt:
            sh.io.stderr.write("^C\n")
            sh.status = 130
        with contextlib.suppress(Exception):
            sh.io.stdout.flush()
