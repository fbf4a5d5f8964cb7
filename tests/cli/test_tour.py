"""`imagesim tour`: the whole lesson as an end-to-end test (every step must behave), lesson
selection, and the failure path."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from imagesim import tour
from imagesim.cli import main


def test_the_whole_tour_passes_as_a_real_process(tmp_path):
    # what `make demo` runs; a private registry is started and stopped on 127.0.0.1
    proc = subprocess.run([sys.executable, "-m", "imagesim", "tour", "--root",
                           str(tmp_path / "root")], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()
    assert any(line.endswith("0 failed, 0 skipped") for line in summary[-3:]), summary[-5:]
    out = proc.stdout
    for command in ("$ imagesim pull tomcat", "$ imagesim commit -m=\"vim cmd add ok\"",
                    "$ curl -s -XGET http://127.0.0.1:", "$ imagesim exec t1 sh -c 'rm -r "
                    "webapps && mv webapps.dist webapps'", "--volumes-from v1"):
        assert command in out
    assert "Already exists" in out and '{"repositories":["zzyyubuntu"]}' in out
    # --root chose the root: it is kept (the images are there), and no container is left
    assert os.path.isdir(tmp_path / "root")


def test_the_tour_leaves_no_container_behind(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "tour", "--lesson", "union"]) == 0
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "ps", "-aq"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["--root", str(tmp_path), "images", "-q"]) == 0
    assert capsys.readouterr().out.strip() != ""


def test_step_mode_pauses_and_q_stops(tmp_path):
    asked = []

    def answer(prompt):
        asked.append(prompt)
        return "" if len(asked) < 2 else "q"

    out = io.StringIO()
    assert tour.run_tour(main, root=str(tmp_path), lessons=["layers"], pause=True,
                         input_fn=answer, out=out) == 1
    assert len(asked) == 2 and "tour interrupted" in out.getvalue()
    assert "2 steps ok, 1 failed" in out.getvalue()


def test_one_lesson_with_its_prerequisites_in_a_temporary_root():
    out = io.StringIO()
    assert tour.run_tour(main, lessons=["tomcat"], out=out) == 0
    text = out.getvalue()
    assert "(layers)" in text and "(tomcat)" in text and "(commit)" not in text
    root = text.splitlines()[0].rsplit(" ", 1)[1]
    assert not os.path.exists(root)          # the temporary root is removed


def test_unknown_lesson_and_list(capsys):
    assert tour.run_tour(main, lessons=["nope"], out=io.StringIO()) == 2
    assert main(["tour", "--list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == tour.lesson_names()


def test_a_misbehaving_step_fails_the_tour(tmp_path, monkeypatch):
    bad = tour.Lesson("bad", "a step whose check cannot hold", (), lambda ctx: [
        tour.Step("imagesim pull ubuntu", "pulls", (tour.has("no such text"),)),
        tour.Step("imagesim which ubuntu /nope", "fails", ()),
    ])
    monkeypatch.setattr(tour, "LESSONS", (bad,))
    out = io.StringIO()
    assert tour.run_tour(main, root=str(tmp_path), lessons=["bad"], out=out) == 1
    text = out.getvalue()
    assert "FAILED: output lacks 'no such text'" in text
    assert "FAILED: exit status 1, expected 0" in text
    assert "0 steps ok, 2 failed, 0 skipped" in text


def test_steps_of_missing_commands_are_skipped_not_failed(tmp_path, monkeypatch):
    lesson = tour.Lesson("part", "one step per command", (), lambda ctx: [
        tour.Step("imagesim pull ubuntu", "pulls", (tour.has("Status:"),)),
        tour.Step("imagesim which ubuntu /etc/os-release", "explains", ()),
    ])
    monkeypatch.setattr(tour, "LESSONS", (lesson,))
    out = io.StringIO()
    assert tour.run_tour(main, root=str(tmp_path), out=out,
                         has_command=lambda name: name != "which") == 0
    text = out.getvalue()
    assert "SKIPPED: `imagesim which` is not available in this build" in text
    assert "1 steps ok, 0 failed, 1 skipped" in text
