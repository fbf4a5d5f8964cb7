"""The demonstration runs on real temporary directories and shows what it claims."""

from __future__ import annotations

from unionfs.demo import run


def test_demo_shows_copy_up_whiteout_opaque_and_exdev():
    lines: list[str] = []
    run(lines.append)
    text = "\n".join(lines)
    assert "trace: copy_up  /etc/os-release" in text
    assert "trace: whiteout /etc/motd" in text
    assert "trace: opaque   /var/cache" in text
    assert "errno 18" in text  # EXDEV
    assert "etc/motd [whiteout (char 0/0)]" in text or "etc/motd [file]" in text
    assert "   A /var/cache/new.db" in lines
    assert "   D /etc/motd" in lines
