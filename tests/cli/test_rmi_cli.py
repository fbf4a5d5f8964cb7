"""``imagesim rmi`` / ``image rm`` through ``main([...])``: docker's lines (``Untagged:`` for
the tag and the repository digest, ``Deleted:`` for the image id and each layer chain id
that goes), its refusals (several repositories, containers using the image, running ones
that cannot be forced) and one error line per bad argument while the others still run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from imagesim.cli import main
from imagesim.store import Store


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> str:
    r = str(tmp_path_factory.mktemp("rmi-template") / "root")
    assert main(["--root", r, "samples", "-q"]) == 0
    return r


@pytest.fixture
def root(template, tmp_path) -> str:
    # cp -a: the unpacked layers hold whiteout device nodes that shutil would try to read
    r = str(tmp_path / "root")
    subprocess.run(["cp", "-a", template, r], check=True)
    return r


def run(capsys, root: str, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--root", root, *args])
    out, err = capsys.readouterr()
    return code, out, err


def deleted_lines(store: Store, name: str) -> list[str]:
    """What docker prints when the image ``name`` is deleted: its id, then the chain id of
    each of its layers no other image uses, top-most first."""
    img = store.resolve(name)
    others = {d for rec in store.images() if rec.image.id != img.id
              for d in rec.image.diff_ids}
    lines = [f"Deleted: {img.id}"]
    for diff_id, chain_id in reversed(list(zip(img.diff_ids, img.chain_ids, strict=True))):
        if diff_id not in others:
            lines.append(f"Deleted: {chain_id}")
    return lines


def test_rmi_of_a_pulled_image_untags_tag_and_digest_then_deletes(root, capsys):
    store = Store(root)
    img = store.resolve("redis:6.0.8")
    expected = ["Untagged: redis:6.0.8", f"Untagged: redis@{img.digest}",
                *deleted_lines(store, "redis:6.0.8")]
    assert len(expected) > 3                       # redis has layers of its own
    shared = [d for d in img.diff_ids if store.layer_dir(d) and
              any(d in rec.image.diff_ids for rec in store.images() if rec.image.id != img.id)]
    code, out, err = run(capsys, root, "rmi", "redis:6.0.8")
    assert (code, err) == (0, "")
    assert out.splitlines() == expected
    store = Store(root)
    assert "redis" not in [r.familiar_name for rec in store.images() for r in rec.tags]
    assert img.digest not in store.blobs
    for d in img.diff_ids:
        assert store.has_layer(d) == (d in shared)
    code, out, _ = run(capsys, root, "image", "inspect", "redis:6.0.8")
    assert code == 1


def test_rmi_of_one_of_several_tags_only_untags(root, capsys):
    assert run(capsys, root, "tag", "ubuntu", "zzyyubuntu:1.2")[0] == 0
    code, out, err = run(capsys, root, "rmi", "zzyyubuntu:1.2")
    assert (code, out, err) == (0, "Untagged: zzyyubuntu:1.2\n", "")
    code, out, _ = run(capsys, root, "image", "inspect", "ubuntu")
    doc = json.loads(out)[0]
    assert doc["RepoTags"] == ["ubuntu:latest"]
    assert doc["RepoDigests"] == [f"ubuntu@{Store(root).resolve('ubuntu').digest}"]


def test_rmi_by_id_named_by_several_repositories_needs_force(root, capsys):
    store = Store(root)
    img = store.resolve("ubuntu")
    assert run(capsys, root, "tag", "ubuntu", "myu:1")[0] == 0
    code, out, err = run(capsys, root, "rmi", img.id.short)
    assert (code, out) == (1, "")
    assert err == (f"Error response from daemon: conflict: unable to delete {img.id.short} "
                   "(must be forced) - image is referenced in multiple repositories\n")
    expected = ["Untagged: myu:1", "Untagged: ubuntu:latest", f"Untagged: ubuntu@{img.digest}",
                *deleted_lines(store, "ubuntu")]
    code, out, err = run(capsys, root, "rmi", "-f", img.id.short)
    assert (code, err) == (0, "")
    assert out.splitlines() == expected
    assert run(capsys, root, "images", "-q", "ubuntu")[1] == ""


def test_rmi_runs_every_argument_and_reports_each_missing_one(root, capsys):
    store = Store(root)
    mysql = store.resolve("mysql:5.7")
    expected = ["Untagged: mysql:5.7", f"Untagged: mysql@{mysql.digest}",
                *deleted_lines(store, "mysql:5.7")]
    zero = "sha256:" + "0" * 64
    code, out, err = run(capsys, root, "rmi", "nosuch", f"ubuntu@{zero}", "mysql:5.7",
                         "nosuch:2")
    assert code == 1
    assert out.splitlines() == expected
    assert err.splitlines() == [
        "Error response from daemon: No such image: nosuch:latest",
        f"Error response from daemon: No such image: ubuntu@{zero}",
        "Error response from daemon: No such image: nosuch:2"]


def test_rmi_by_repository_digest_removes_only_that_reference(root, capsys):
    store = Store(root)
    alpine = store.resolve("alpine")
    code, out, err = run(capsys, root, "rmi", f"alpine@{alpine.digest}")
    assert (code, out, err) == (0, f"Untagged: alpine@{alpine.digest}\n", "")
    code, out, _ = run(capsys, root, "images", "--digests", "alpine")
    assert out.splitlines()[1].split()[:3] == ["alpine", "latest", "<none>"]
    expected = ["Untagged: alpine:latest", *deleted_lines(store, "alpine")]
    code, out, err = run(capsys, root, "image", "rm", "alpine")
    assert (code, err) == (0, "")
    assert out.splitlines() == expected


def test_a_digest_only_repository_is_listed_and_keeps_the_image(root, capsys):
    # as "pull 127.0.0.1:5000/u@sha256:..." records it: a repository known by digest alone
    store = Store(root)
    img = store.resolve("ubuntu")
    store.add_repo_digest("127.0.0.1:5000/u", img.digest)
    code, out, _ = run(capsys, root, "images", "--digests")
    rows = [line.split()[:4] for line in out.splitlines()[1:]]
    assert ["127.0.0.1:5000/u", "<none>", str(img.digest), img.id.short] in rows
    assert ["ubuntu", "latest", str(img.digest), img.id.short] in rows
    code, out, _ = run(capsys, root, "image", "inspect", "ubuntu")
    assert json.loads(out)[0]["RepoDigests"] == [f"127.0.0.1:5000/u@{img.digest}",
                                                 f"ubuntu@{img.digest}"]
    expected = [f"Untagged: 127.0.0.1:5000/u@{img.digest}", *deleted_lines(store, "ubuntu")]
    # the other repository's digest still names the image: rmi of the tag only untags
    code, out, err = run(capsys, root, "rmi", "ubuntu")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["Untagged: ubuntu:latest", f"Untagged: ubuntu@{img.digest}"]
    code, out, err = run(capsys, root, "rmi", f"127.0.0.1:5000/u@{img.digest}")
    assert (code, err) == (0, "")
    assert out.splitlines() == expected


def test_rmi_refuses_an_image_a_stopped_container_uses(root, capsys):
    store = Store(root)
    img = store.resolve("ubuntu")
    code, out, _ = run(capsys, root, "create", "--name", "c1", "ubuntu")
    assert code == 0
    cid = out.strip()[:12]
    code, out, err = run(capsys, root, "rmi", "ubuntu")
    assert (code, out) == (1, "")
    assert err == ('Error response from daemon: conflict: unable to remove repository '
                   f'reference "ubuntu" (must force) - container {cid} is using its '
                   f'referenced image {img.id.short}\n')
    code, out, err = run(capsys, root, "rmi", img.id.short)
    assert (code, out) == (1, "")
    assert err == (f"Error response from daemon: conflict: unable to delete {img.id.short} "
                   f"(must be forced) - image is being used by stopped container {cid}\n")
    # forced: the references go; the container keeps its image, dangling
    code, out, err = run(capsys, root, "rmi", "-f", "ubuntu")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["Untagged: ubuntu:latest", f"Untagged: ubuntu@{img.digest}"]
    code, out, _ = run(capsys, root, "images", "-a")
    assert [line.split()[:3] for line in out.splitlines()[1:]].count(
        ["<none>", "<none>", img.id.short]) == 1
    assert run(capsys, root, "rm", "c1")[0] == 0
    expected = deleted_lines(Store(root), img.id.short)
    code, out, err = run(capsys, root, "rmi", img.id.short)
    assert (code, err) == (0, "")
    assert out.splitlines() == expected


def test_rmi_cannot_force_deleting_an_image_a_running_container_uses(root, capsys):
    store = Store(root)
    img = store.resolve("tomcat")
    code, out, _ = run(capsys, root, "run", "-d", "--name", "r1", "tomcat")
    assert code == 0
    try:
        cid = out.strip()[:12]
        code, out, err = run(capsys, root, "rmi", "-f", img.id.short)
        assert (code, out) == (1, "")
        assert err == (f"Error response from daemon: conflict: unable to delete "
                       f"{img.id.short} (cannot be forced) - image is being used by running "
                       f"container {cid}\n")
        # by name, forced: docker untags and keeps the image quietly
        code, out, err = run(capsys, root, "rmi", "-f", "tomcat")
        assert (code, err) == (0, "")
        assert out.splitlines() == ["Untagged: tomcat:latest", f"Untagged: tomcat@{img.digest}"]
        assert Store(root).resolve(img.id.short).id == img.id
    finally:
        run(capsys, root, "rm", "-f", "r1")


def test_rmi_without_arguments_is_a_usage_error(root, capsys):
    code, out, err = run(capsys, root, "rmi")
    # docker's exit status for a command it could not run (as every imagesim usage error)
    assert (code, out) == (125, "")
    assert "Missing argument 'NAMES...'" in err


def test_rmi_as_a_subprocess_exits_1_after_a_failure(root):
    # the real process: error lines on stderr, the successful ones on stdout, exit 1
    env = dict(os.environ)
    p = subprocess.run([sys.executable, "-m", "imagesim", "--root", root, "rmi", "nosuch",
                        "registry"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1
    assert p.stderr == "Error response from daemon: No such image: nosuch:latest\n"
    assert p.stdout.splitlines()[0] == "Untagged: registry:latest"
    assert p.stdout.splitlines()[2].startswith("Deleted: sha256:")
