"""Reference parsing and normalisation, case by case as docker's distribution/reference does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagesim.errors import ReferenceInvalid
from imagesim.reference import Reference, familiar, is_valid_tag

HEX = "a" * 64


@pytest.mark.parametrize("text, domain, path, tag, digest, host, fam, full", [
    ("ubuntu", "docker.io", "library/ubuntu", "latest", None, None, "ubuntu:latest",
     "docker.io/library/ubuntu:latest"),
    ("library/ubuntu:latest", "docker.io", "library/ubuntu", "latest", None, None,
     "ubuntu:latest", "docker.io/library/ubuntu:latest"),
    ("docker.io/library/ubuntu", "docker.io", "library/ubuntu", "latest", None, None,
     "ubuntu:latest", "docker.io/library/ubuntu:latest"),
    ("index.docker.io/ubuntu:20.04", "docker.io", "library/ubuntu", "20.04", None, None,
     "ubuntu:20.04", "docker.io/library/ubuntu:20.04"),
    ("mysql:5.7", "docker.io", "library/mysql", "5.7", None, None, "mysql:5.7",
     "docker.io/library/mysql:5.7"),
    ("billygoo/tomcat8-jdk8", "docker.io", "billygoo/tomcat8-jdk8", "latest", None, None,
     "billygoo/tomcat8-jdk8:latest", "docker.io/billygoo/tomcat8-jdk8:latest"),
    ("127.0.0.1:5000/zzyyubuntu:1.2", "127.0.0.1:5000", "zzyyubuntu", "1.2", None,
     "127.0.0.1:5000", "127.0.0.1:5000/zzyyubuntu:1.2", "127.0.0.1:5000/zzyyubuntu:1.2"),
    ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", None, "localhost:5000",
     "localhost:5000/a/b:latest", "localhost:5000/a/b:latest"),
    ("localhost/foo", "localhost", "foo", "latest", None, "localhost", "localhost/foo:latest",
     "localhost/foo:latest"),
    ("registry.cn-hangzhou.aliyuncs.com/ns/myubuntu:1.3", "registry.cn-hangzhou.aliyuncs.com",
     "ns/myubuntu", "1.3", None, "registry.cn-hangzhou.aliyuncs.com",
     "registry.cn-hangzhou.aliyuncs.com/ns/myubuntu:1.3",
     "registry.cn-hangzhou.aliyuncs.com/ns/myubuntu:1.3"),
    ("foo:5000", "docker.io", "library/foo", "5000", None, None, "foo:5000",
     "docker.io/library/foo:5000"),
    ("Foo/bar", "Foo", "bar", "latest", None, "Foo", "Foo/bar:latest", "Foo/bar:latest"),
    ("[::1]:5000/foo", "[::1]:5000", "foo", "latest", None, "[::1]:5000",
     "[::1]:5000/foo:latest", "[::1]:5000/foo:latest"),
    (f"ubuntu@sha256:{HEX}", "docker.io", "library/ubuntu", None, f"sha256:{HEX}", None,
     f"ubuntu@sha256:{HEX}", f"docker.io/library/ubuntu@sha256:{HEX}"),
    (f"ubuntu:1.0@sha256:{HEX}", "docker.io", "library/ubuntu", "1.0", f"sha256:{HEX}", None,
     f"ubuntu:1.0@sha256:{HEX}", f"docker.io/library/ubuntu:1.0@sha256:{HEX}"),
    ("a_b__d-e--f/x", "docker.io", "a_b__d-e--f/x", "latest", None, None,
     "a_b__d-e--f/x:latest", "docker.io/a_b__d-e--f/x:latest"),
])
def test_parse_normalises_like_docker(text, domain, path, tag, digest, host, fam, full):
    ref = Reference.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.registry_host == host
    assert str(ref) == fam
    assert ref.full == full


@pytest.mark.parametrize("text", [
    "", "UPPER", "ubuntu:", ":tag", "a//b", "-foo", "foo-", "foo:-bad", "foo:a b",
    "foo@sha256:abc", "foo@md5:" + "a" * 32, HEX,
    "foo:" + "a" * 129, "a/" * 130 + "b", "foo/../bar", "host:port/foo", "foo bar",
    "foo/Bar", "-host.com/foo", "foo/.bar",
])
def test_invalid_references_are_refused(text):
    with pytest.raises(ReferenceInvalid):
        Reference.parse(text)


def test_uppercase_repository_message_says_lowercase():
    with pytest.raises(ReferenceInvalid, match="must be lowercase"):
        Reference.parse("Ubuntu")


def test_tag_given_tells_a_defaulted_tag_apart():
    assert Reference.parse("ubuntu").tag_given is False
    assert Reference.parse("ubuntu:latest").tag_given is True
    assert Reference.parse(f"ubuntu@sha256:{HEX}").tag is None


def test_reference_property_for_urls_prefers_the_digest():
    assert Reference.parse("redis:6.0.8").reference == "6.0.8"
    assert Reference.parse(f"redis:6.0.8@sha256:{HEX}").reference == f"sha256:{HEX}"


def test_with_tag_and_with_digest():
    ref = Reference.parse("127.0.0.1:5000/zzyyubuntu:1.2")
    assert str(ref.with_tag("2.0")) == "127.0.0.1:5000/zzyyubuntu:2.0"
    assert str(ref.with_digest(f"sha256:{HEX}")) == f"127.0.0.1:5000/zzyyubuntu@sha256:{HEX}"
    with pytest.raises(ReferenceInvalid):
        ref.with_tag("bad tag")


def test_familiar_helper():
    assert familiar("docker.io/library/ubuntu:latest") == "ubuntu:latest"
    assert familiar("not a ref!") == "not a ref!"


def test_valid_tag_grammar():
    assert is_valid_tag("v1.2_3-x")
    assert not is_valid_tag(".hidden")
    assert not is_valid_tag("a" * 129)


_component = st.from_regex(r"[a-z0-9]{1,6}([_-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(st.lists(_component, min_size=1, max_size=3), _tag)
def test_parse_then_str_round_trips(parts, tag):
    path = "/".join(parts)
    ref = Reference.parse(f"{path}:{tag}")
    again = Reference.parse(str(ref))
    assert again == ref
    assert Reference.parse(ref.full) == ref
