"""Image references as docker parses them: ``[host[:port]/]path[:tag][@digest]``.

The grammar is the one of ``github.com/distribution/reference``::

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain "/"] path
    domain           := host [":" port]
    host             := domain-name | IPv4 | "[" IPv6 "]"
    path             := path-component ["/" path-component]*
    path-component   := [a-z0-9]+ ([_.]|__|[-]+ [a-z0-9]+)*
    tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}

Normalisation follows docker (``ParseNormalizedNamed``): the first component is a registry
host only when it contains ``.`` or ``:``, is ``localhost``, or has an upper-case letter;
otherwise the reference is on Docker Hub (``docker.io``), and a one-component Hub path gets
``library/``. ``ubuntu`` is therefore ``docker.io/library/ubuntu:latest``, and its familiar
form (``str()``) is ``ubuntu:latest``.

Decision for this project: ``registry_host`` is ``None`` for every Docker Hub reference
(``ubuntu``, ``library/ubuntu``, ``docker.io/library/ubuntu``, ``index.docker.io/...``):
Docker Hub is not reachable here, and the built-in library (``imagesim.library``) plays its
part. Any other host (``127.0.0.1:5000``, ``localhost:5000``, ``registry.example.com``) is
returned as written, port included, and is where push and pull go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import Digest
from .errors import DigestInvalid, ReferenceInvalid

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?$")
TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_ID_RE = re.compile(r"^[a-f0-9]{64}$")


def is_valid_tag(tag: str) -> bool:
    """True when ``tag`` matches docker's tag grammar."""
    return bool(TAG_RE.match(tag))


def is_valid_path(path: str) -> bool:
    """True when ``path`` is a valid repository path (``library/ubuntu``, ``a/b-c/d``)."""
    return bool(PATH_RE.match(path))


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalised image reference.

    ``domain`` is always set (``docker.io`` for Hub references); ``path`` is the repository
    path (``library/ubuntu``); ``tag`` is the tag, ``"latest"`` when the text named neither
    a tag nor a digest (``tag_given`` says whether the text named it: ``imagesim pull`` prints
    ``Using default tag: latest`` when it did not); ``digest`` is the ``sha256:...`` string or
    ``None``. ``registry_host`` is ``None`` for Docker Hub (served by the built-in library)
    and the ``host[:port]`` otherwise.
    """

    domain: str
    path: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None
    tag_given: bool = True

    # -- parsing ----------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise ``text`` as docker does.

        Raises ``ReferenceInvalid`` (``invalid reference format``) for anything outside the
        grammar: upper-case letters in the path, empty components, a 64-hex-digit repository
        name, a bad tag or digest, a name over 255 characters.
        """
        if not isinstance(text, str) or not text:
            raise ReferenceInvalid("invalid reference format: empty reference")
        rest = text
        digest: str | None = None
        if "@" in rest:
            rest, _, digest_text = rest.partition("@")
            try:
                Digest.parse(digest_text)
            except DigestInvalid:
                raise ReferenceInvalid(
                    f"invalid reference format: bad digest in {text!r}") from None
            digest = digest_text
        tag: str | None = None
        # a tag follows the last ':' only when no '/' comes after it (a port is not a tag)
        colon = rest.rfind(":")
        if colon != -1 and "/" not in rest[colon + 1:]:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not is_valid_tag(tag):
                raise ReferenceInvalid(f"invalid reference format: bad tag in {text!r}")
        domain, path = _split_domain(rest, text)
        if len(domain) + 1 + len(path) > NAME_TOTAL_MAX:
            raise ReferenceInvalid("invalid reference format: repository name must not be "
                                   f"more than {NAME_TOTAL_MAX} characters")
        if not is_valid_path(path):
            if path.lower() != path and is_valid_path(path.lower()):
                raise ReferenceInvalid(
                    "invalid reference format: repository name "
                    f"({path}) must be lowercase")
            raise ReferenceInvalid(f"invalid reference format: {text!r}")
        if domain == DEFAULT_DOMAIN and _ID_RE.match(path.removeprefix(OFFICIAL_REPO_PREFIX)) \
                and "/" not in rest:
            raise ReferenceInvalid(f"invalid repository name ({path}), cannot specify "
                                   "64-byte hexadecimal strings")
        tag_given = tag is not None
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(domain, path, tag, digest, tag_given)

    @classmethod
    def try_parse(cls, text: str) -> Reference | None:
        """``parse`` that returns ``None`` instead of raising."""
        try:
            return cls.parse(text)
        except ReferenceInvalid:
            return None

    # -- views ------------------------------------------------------------------------

    @property
    def registry_host(self) -> str | None:
        """``None`` for Docker Hub (the built-in library), else ``host[:port]``."""
        return None if self.domain == DEFAULT_DOMAIN else self.domain

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/ubuntu``."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository path a registry's API uses (``library/ubuntu``)."""
        return self.path

    @property
    def familiar_name(self) -> str:
        """The name as docker prints it: ``ubuntu``, ``billygoo/tomcat8-jdk8``,
        ``127.0.0.1:5000/zzyyubuntu``."""
        if self.domain == DEFAULT_DOMAIN:
            rest = self.path.removeprefix(OFFICIAL_REPO_PREFIX)
            # docker drops "library/" only for a one-component rest: library/a/b stays whole,
            # or it would name the repository a/b
            return rest if "/" not in rest else self.path
        return self.name

    @property
    def full(self) -> str:
        """The canonical string: ``docker.io/library/ubuntu:latest`` (what ``pull`` prints
        last)."""
        return self.name + self._suffix()

    @property
    def reference(self) -> str:
        """What follows the repository in a registry URL: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def _suffix(self) -> str:
        out = f":{self.tag}" if self.tag is not None else ""
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        """The same repository with ``tag`` and no digest. Raises ``ReferenceInvalid``."""
        if not is_valid_tag(tag):
            raise ReferenceInvalid(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None, True)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest`` (tag dropped)."""
        return Reference(self.domain, self.path, None, str(Digest.parse(str(digest))), False)

    def __str__(self) -> str:
        """The familiar form: ``ubuntu:latest``, ``redis@sha256:...``."""
        return self.familiar_name + self._suffix()


def _split_domain(name: str, text: str) -> tuple[str, str]:
    """Docker's ``splitDockerDomain``: decide whether the first component is a host."""
    first, sep, remainder = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost"
                   and first.lower() == first):
        domain, path = DEFAULT_DOMAIN, name
    else:
        if not DOMAIN_RE.match(first):
            raise ReferenceInvalid(f"invalid reference format: bad registry host in {text!r}")
        domain, path = first, remainder
    if domain in LEGACY_DEFAULT_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def familiar(name_or_ref: str) -> str:
    """The familiar string of any reference text (``docker.io/library/x:1`` -> ``x:1``);
    text that does not parse is returned unchanged."""
    ref = Reference.try_parse(name_or_ref)
    return str(ref) if ref is not None else name_or_ref
