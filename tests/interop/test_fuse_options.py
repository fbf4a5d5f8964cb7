"""The fuse-overlayfs command line: option parsing, and bad options refused before anything is
mounted (a clear message, a non-zero exit, nothing in /proc/mounts)."""

from __future__ import annotations

import os

import pytest

from tests.interop.fuse_helpers import in_mounts, make_stack, mounted, run_cli
from unionfs.mount import (
    OptionError,
    check_paths,
    format_event,
    fuse_kwargs,
    parse_options,
    split_lowerdir,
    split_options,
)


def test_lowerdir_is_split_at_colons_top_most_first_with_escapes():
    opts = parse_options(["lowerdir=/a:/b\\:c:/d"], cwd="/")
    assert opts.lowerdirs == ("/a", "/b:c", "/d")
    assert opts.upperdir is None and not opts.writable


def test_relative_paths_are_taken_from_the_working_directory():
    opts = parse_options(["lowerdir=l1:l2,upperdir=u,workdir=w"], cwd="/srv/x")
    assert opts.lowerdirs == ("/srv/x/l1", "/srv/x/l2")
    assert (opts.upperdir, opts.workdir) == ("/srv/x/u", "/srv/x/w")
    assert opts.writable


def test_escaped_comma_stays_inside_a_path():
    assert split_options("lowerdir=/a\\,b,ro") == ["lowerdir=/a,b", "ro"]
    assert parse_options(["lowerdir=/a\\,b"], cwd="/").lowerdirs == ("/a,b",)


def test_overlay_options_and_values():
    opts = parse_options(["lowerdir=/l,upperdir=/u,workdir=/w,redirect_dir=on,index=on",
                          "metacopy=on,xino=off,trace=/t.log,timeout=5,threaded=1"], cwd="/")
    assert (opts.redirect_dir, opts.index, opts.metacopy) == (True, True, True)
    assert (opts.xino, opts.trace, opts.timeout, opts.threaded) == ("off", "/t.log", 5.0, True)
    assert parse_options(["lowerdir=/l,redirect_dir=follow"]).redirect_dir is False


def test_cache_and_durability_options():
    opts = parse_options(["lowerdir=/l"], cwd="/")
    assert (opts.cache_readdir, opts.readdirplus, opts.volatile) == (True, True, False)
    opts = parse_options(["lowerdir=/l,cache_readdir=off,readdirplus=off,volatile"], cwd="/")
    assert (opts.cache_readdir, opts.readdirplus, opts.volatile) == (False, False, True)
    assert parse_options(["lowerdir=/l,fsync=0"], cwd="/").volatile is True
    assert parse_options(["lowerdir=/l,volatile,fsync=1"], cwd="/").volatile is False
    # copy-ups are flushed before they are renamed into place only when asked (kernel
    # overlayfs always does; fuse-overlayfs never does)
    assert opts.sync_copyup is False
    assert parse_options(["lowerdir=/l,sync_copyup"], cwd="/").sync_copyup is True
    assert parse_options(["lowerdir=/l,sync_copyup=on,sync_copyup=off"]).sync_copyup is False
    with pytest.raises(OptionError, match="conflicts with volatile"):
        parse_options(["lowerdir=/l,sync_copyup,fsync=0"], cwd="/")
    with pytest.raises(OptionError, match="sync_copyup='later'"):
        parse_options(["lowerdir=/l,sync_copyup=later"], cwd="/")
    # none of them reaches libfuse, which would refuse an option it does not know
    assert opts.fuse == ()
    with pytest.raises(OptionError, match="fsync='maybe'"):
        parse_options(["lowerdir=/l,fsync=maybe"], cwd="/")


def test_passthrough_is_on_unless_turned_off():
    assert parse_options(["lowerdir=/l"], cwd="/").passthrough is True
    opts = parse_options(["lowerdir=/l,passthrough=off"], cwd="/")
    assert opts.passthrough is False and opts.fuse == ()  # (libfuse would refuse it)
    assert parse_options(["lowerdir=/l,passthrough=off,passthrough=on"]).passthrough is True
    with pytest.raises(OptionError, match="passthrough='sometimes'"):
        parse_options(["lowerdir=/l,passthrough=sometimes"], cwd="/")


def test_spin_takes_microseconds():
    assert parse_options(["lowerdir=/l"], cwd="/").spin == 200.0
    assert parse_options(["lowerdir=/l,spin=0"], cwd="/").spin == 0.0
    opts = parse_options(["lowerdir=/l,spin=150"], cwd="/")
    assert opts.spin == 150.0 and opts.fuse == ()
    for bad in ("-1", "fast", "2000000"):
        with pytest.raises(OptionError, match=f"spin='{bad}': expected microseconds"):
            parse_options([f"lowerdir=/l,spin={bad}"], cwd="/")


def test_volatile_reaches_the_engine(tmp_path):
    from unionfs.mount import build_union

    for d in ("l", "u", "w"):
        (tmp_path / d).mkdir()
    base = f"lowerdir={tmp_path}/l,upperdir={tmp_path}/u,workdir={tmp_path}/w"
    # the engine's ``volatile`` is the copy-up flush: off unless sync_copyup
    assert build_union(parse_options([base])).volatile is True
    assert build_union(parse_options([base + ",sync_copyup"])).volatile is False
    assert build_union(parse_options([base + ",fsync=0"])).volatile is True


def test_fuse_options_pass_through_and_ro_makes_it_read_only():
    opts = parse_options(["lowerdir=/l,upperdir=/u,workdir=/w,ro,allow_other,"
                          "default_permissions,fsname=myfs,noatime,nofail"], cwd="/")
    assert opts.read_only and not opts.writable
    assert opts.fuse_option("allow_other") is True
    assert opts.fuse_option("fsname") == "myfs"
    assert opts.fuse_option("noatime") is True
    assert opts.fuse_option("nofail") is None  # mount(8)-only: never handed to libfuse


@pytest.mark.parametrize(("text", "message"), [
    ("upperdir=/u,workdir=/w", "no lowerdir"),
    ("lowerdir=", "needs at least one directory"),
    ("lowerdir=/a::/b", "empty layer path"),
    ("lowerdir=/a,upperdir=/u", "without workdir"),
    ("lowerdir=/a,workdir=/w", "without upperdir"),
    ("lowerdir=/a,index=maybe", "expected on or off"),
    ("lowerdir=/a,xino=sometimes", "expected on, off or auto"),
    ("lowerdir=/a,timeout=soon", "number of seconds"),
    ("lowerdir=/a,timeout=-1", "must not be negative"),
    ("lowerdir=/a,frobnicate", "unknown option 'frobnicate'"),
    ("lowerdir=/a,uidmapping=0:1000:1", "not supported"),
    ("lowerdir=/a,allow_other=1", "takes no value"),
    ("lowerdir=/a,fsname", "needs a value"),
])
def test_bad_options_are_refused_with_the_reason(text, message):
    with pytest.raises(OptionError, match=message):
        parse_options([text], cwd="/")


def test_split_lowerdir_rejects_empty_layers():
    assert split_lowerdir("a") == ["a"]
    with pytest.raises(OptionError):
        split_lowerdir(":a")


def test_check_paths_names_the_first_problem(tmp_path):
    s = make_stack(tmp_path)
    ok = parse_options([s.options()])
    check_paths(ok, str(s.mnt))
    with pytest.raises(OptionError, match="no such directory"):
        check_paths(parse_options([f"lowerdir={tmp_path}/missing"]), str(s.mnt))
    with pytest.raises(OptionError, match="not a directory"):
        check_paths(parse_options([f"lowerdir={s.lowers[-1]}/etc/motd"]), str(s.mnt))
    with pytest.raises(OptionError, match="listed twice"):
        check_paths(parse_options([f"lowerdir={s.lowers[0]}:{s.lowers[0]}"]), str(s.mnt))
    os.mkdir(s.upper / "w")
    with pytest.raises(OptionError, match="neither inside the other"):
        check_paths(parse_options(
            [f"lowerdir={s.lowers[0]},upperdir={s.upper},workdir={s.upper}/w"]), str(s.mnt))
    with pytest.raises(OptionError, match="mount point"):
        check_paths(ok, str(tmp_path / "nowhere"))


def test_trace_lines_name_kind_path_layer_and_reason():
    class Ev:
        kind, path, layer, reason = "copy_up", "/etc/my file", "lower1", "open for write"

    assert format_event(Ev()) == 'copy_up "/etc/my file" layer=lower1 reason="open for write"'


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-o", "upperdir=/tmp"], 2, "no lowerdir specified"),
    (["-o", "lowerdir={low},bogus=1"], 2, "unknown option 'bogus'"),
    (["-o", "lowerdir={root}/absent"], 2, "no such directory"),
    (["-o", "lowerdir={low},upperdir={root}/upper"], 2, "without workdir"),
    ([], 2, ""),  # click: missing -o lowerdir is found by our parser, exit 2 too
])
def test_bad_command_lines_exit_non_zero_and_mount_nothing(tmp_path, args, code, message):
    s = make_stack(tmp_path)
    args = [a.format(low=s.lowers[0], root=tmp_path) for a in args]
    r = run_cli("mount", *args, str(s.mnt))
    assert r.returncode == code, r.stderr
    assert message in r.stderr
    assert r.stderr.strip(), "a refusal must say why"
    assert in_mounts(s.mnt) == []


def test_mount_without_a_mountpoint_is_a_usage_error(tmp_path):
    r = run_cli("mount", "-o", f"lowerdir={tmp_path}")
    assert r.returncode == 2
    assert "MOUNTPOINT" in r.stderr


def test_umount_of_something_not_mounted_fails_clearly(tmp_path):
    r = run_cli("umount", str(tmp_path))
    assert r.returncode == 1
    assert "not mounted" in r.stderr


def test_which_outside_a_unionfs_mount_fails_clearly(tmp_path):
    (tmp_path / "f").write_text("x")
    r = run_cli("which", str(tmp_path / "f"))
    assert r.returncode == 1
    assert "not on a unionfs mount" in r.stderr
    r = run_cli("which", str(tmp_path / "missing"))
    assert r.returncode == 1
    assert "No such file" in r.stderr


@pytest.mark.parametrize("extra", ["", "sync_copyup", "volatile"])
def test_copy_up_and_sync_calls_under_each_durability(stack, extra):
    with mounted(stack, extra=extra) as mnt:
        with open(mnt / "data" / "big", "r+b") as f:
            f.write(b"+")
            os.fsync(f.fileno())
            os.fdatasync(f.fileno())
        for d in ("data", "emptydir", "."):  # copied-up parent, lower only, the root
            fd = os.open(mnt / d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        data = (stack.upper / "data" / "big").read_bytes()
    lower = (stack.lowers[-1] / "data" / "big").read_bytes()
    assert data == b"+" + lower[1:]
    assert not [p for p in stack.work.rglob("*") if not p.is_dir()]  # no temporaries left


def test_access_time_options_reach_libfuse_as_it_knows_them():
    # libfuse sets MS_NOATIME or not, nothing else; the kernel's default is relatime
    for given, passed in (("relatime", "atime"), ("strictatime", "atime"), ("atime", "atime"),
                          ("noatime", "noatime"), ("nodiratime", "noatime"),
                          ("noatime,relatime", "atime"), ("relatime,noatime", "noatime")):
        opts = parse_options([f"lowerdir=/l,{given}"], cwd="/")
        assert dict(opts.fuse) == {passed: True}, given
    assert fuse_kwargs(parse_options(["lowerdir=/l"], cwd="/"))["noatime"] is True
    assert "noatime" not in fuse_kwargs(parse_options(["lowerdir=/l,relatime"], cwd="/"))

