"""The teaching views on a real store: images built from real layer tars (packed with
imagesim.layers, unpacked by the store), read through the real union engine."""

from __future__ import annotations

import errno
import shutil
import subprocess

import pytest

from imagesim import teach
from imagesim.image import Image
from imagesim.layers import pack_to_blobs
from imagesim.store import Store
from unionfs.layer import MemoryLayer


def _layer(files=(), dirs=(), whiteouts=(), opaque=()):
    layer = MemoryLayer()
    for d in dirs:
        layer.makedirs(d)
    for path, data in files:
        parent = path.rsplit("/", 1)[0]
        if parent:
            layer.makedirs(parent)
        layer.write_file(path, data)
    for w in whiteouts:
        parent = w.rsplit("/", 1)[0]
        if parent:
            layer.makedirs(parent)
        layer.whiteout(w)
    for d in opaque:
        layer.makedirs(d)
        layer.set_opaque(d)
    return layer


def _image(store, layers, tag):
    img = Image.new(config={"Cmd": ["/bin/sh"]})
    for created_by, layer in layers:
        layer = layer() if callable(layer) else layer
        res = pack_to_blobs(layer, store.blobs)
        img = img.append_layer(res.descriptor(), res.diff_id, created_by=created_by)
    return store.put_image(img, tags=[tag])


def _base():
    return _layer(
    files=[("/etc/os-release", b"NAME=sim\n"), ("/etc/hostname", b"base\n"),
           ("/opt/app/big.bin", b"x" * 5000), ("/opt/app/keep.txt", b"keep\n"),
           ("/srv/old/a", b"aaa")],
        dirs=["/bin", "/tmp"])


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "root", fsync=False)
    base = ("ADD rootfs.tar /", _base())   # one layer object: both images share its tar
    _image(s, [base,
               ("RUN echo >> /etc/hostname && rm /opt/app/big.bin", lambda: _layer(
                   files=[("/etc/hostname", b"base\nmore\n")], whiteouts=["/opt/app/big.bin"])),
               ("COPY srv /srv", lambda: _layer(files=[("/srv/old/b", b"bb")],
                                                opaque=["/srv/old"]))],
           "demo:1")
    _image(s, [base, ("RUN touch /other", lambda: _layer(files=[("/other", b"o")]))],
           "other:1")
    return s


def test_layers_numbered_from_the_bottom(store):
    subj = teach.open_subject(store, "demo:1")
    assert [li.letter for li in subj.layers] == ["a", "b", "c"]
    assert subj.layers[0].created_by == "ADD rootfs.tar /"
    assert subj.layer_at(0).index == 3 and subj.layer_at(2).index == 1


def test_which_names_supplier_shadows_and_reasons(store):
    subj = teach.open_subject(store, "demo:1")
    ex = teach.explain(subj, "/etc/hostname")
    assert ex.supplier.index == 2
    assert [(li.index, e.size) for li, e in ex.shadows] == [(1, 5)]
    text = "\n".join(ex.lines())
    assert "supplied by: [b] layer 2" in text and "shadows:     [a] layer 1" in text
    ex = teach.explain(subj, "/etc/os-release")
    assert ex.supplier.index == 1 and ex.shadows == ()
    assert "only copy" in "\n".join(ex.reasons)
    ex = teach.explain(subj, "/etc")
    assert [li.index for li in ex.merged] == [2, 1]
    ex = teach.explain(subj, "/srv/old/b")
    assert ex.supplier.index == 3


def test_which_on_a_hidden_path_names_the_whiteout(store):
    subj = teach.open_subject(store, "demo:1")
    with pytest.raises(FileNotFoundError) as e:
        teach.explain(subj, "/opt/app/big.bin")
    assert e.value.errno == errno.ENOENT
    assert "a whiteout at /opt/app/big.bin in layer 2" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        teach.explain(subj, "/srv/old/a")
    assert "an opaque directory at /srv/old in layer 3" in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        teach.explain(subj, "/nowhere")
    assert e.value.errno == errno.ENOENT


def test_unknown_subject(store):
    with pytest.raises(teach.TeachError, match="No such container or image: nope"):
        teach.open_subject(store, "nope")


def test_tree_marks_each_entry_with_its_layers(store):
    subj = teach.open_subject(store, "demo:1")
    rows = teach.tree(subj, "/")
    by_path = {r.path: r for r in rows}
    assert by_path["/etc/hostname"].letters == ("b", "a")
    assert by_path["/etc/os-release"].letters == ("a",)
    assert by_path["/srv/old"].letters == ("c",)      # opaque: the lower dir is not merged
    assert "/opt/app/big.bin" not in by_path and "/srv/old/a" not in by_path
    lines = list(teach.format_tree(subj, rows))
    assert "  [b] │   ├── hostname" in lines
    assert any(line.startswith("  [a] ") and line.endswith("os-release") for line in lines)
    colored = list(teach.format_tree(subj, rows, all_layers=True, color=True))
    assert any(getattr(t, "plain", "").endswith("hostname") and "[b,a]" in t.plain
               for t in colored)


def test_layer_files_added_changed_removed_and_waste(store):
    report = teach.layer_files(store, "demo:1")
    a, b, c = report.layers
    assert ("/etc/hostname", 5) in a.added and ("/opt/app/big.bin", 5000) in a.added
    assert b.changed == (("/etc/hostname", 10),)
    assert b.removed == ("/opt/app/big.bin",)
    assert c.removed == ("/srv/old/*",)
    # layer a stores 5 + 9 + 5000 + 5 + 3 bytes; hostname (5), big.bin (5000), /srv/old/a (3)
    # are overwritten or deleted later
    assert a.bytes == 5022 and a.wasted == 5008
    assert report.total_bytes == 5022 + 10 + 2 and report.wasted_bytes == 5008
    assert report.efficiency == pytest.approx((5034 - 5008) / 5034)
    text = "\n".join(teach.format_layer_files(report))
    assert "Image efficiency score: 0.52 %" in text
    assert report.wasted_paths[0] == ("/opt/app/big.bin", 1, 5000)


def test_graph_draws_the_shared_base_once(store):
    g = teach.build_graph(store)
    layers = [n for n in g.nodes.values() if n.kind == "layer"]
    assert len(layers) == 4            # base shared, then 2 + 1 layers of their own
    base = g.nodes[g.nodes["scratch"].children[0]]
    assert base.users == 2 and "shared by 2 images" in base.label
    text = "\n".join(g.to_text())
    assert text.count("shared by 2 images") == 1
    assert "image demo:1" in text and "image other:1" in text
    dot = g.to_dot()
    assert dot.startswith("digraph imagesim {") and dot.count("->") == len(g.nodes) - 1


def test_svg_renders_with_graphviz(store, tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("graphviz `dot` is not installed")
    svg = teach.render_svg(teach.build_graph(store).to_dot())
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and b"demo:1" in svg
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: the SVG was produced but not rendered")
    (tmp_path / "g.svg").write_bytes(svg)
    png = tmp_path / "g.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", f"--screenshot={png}",
                    "--window-size=800,600", f"file://{tmp_path / 'g.svg'}"],
                   capture_output=True, timeout=120, check=False)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import zlib
    # decode the IDAT stream and check the picture is not one flat colour
    chunks, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        if data[i + 4:i + 8] == b"IDAT":
            chunks.append(data[i + 8:i + 8 + n])
        i += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    assert len(set(raw[1:4000])) > 2
