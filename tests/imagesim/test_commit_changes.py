"""``commit -c`` / ``import -c``: one ``apply_changes`` with the Dockerfile builder's rules
(moby ``BuildFromConfig``), for both commands."""

from __future__ import annotations

import pytest

from imagesim import container as _container
from imagesim.image import ChangeInvalid, apply_changes, normalize_workdir


def test_one_implementation_serves_commit_and_import():
    assert _container.apply_changes is apply_changes


def test_every_instruction_docker_accepts():
    cfg = apply_changes({"Env": ["A=1"]}, [
        'CMD ["redis-server", "/etc/redis/redis.conf"]', "ENV A=2 B=3",
        "ENV C hello world", "EXPOSE 80 53/udp", 'LABEL a=b "c d"="e f"', "USER nobody",
        "VOLUME /data /logs", "WORKDIR /app", "STOPSIGNAL SIGTERM", "ONBUILD RUN make",
        "HEALTHCHECK --interval=30s --timeout=1m30s --retries=3 CMD curl -f http://x/",
        "ENTRYPOINT echo hi"])
    assert cfg["Cmd"] == ["redis-server", "/etc/redis/redis.conf"]  # CMD came first: kept
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["Env"] == ["A=2", "B=3", "C=hello world"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"a": "b", "c d": "e f"}
    assert cfg["User"] == "nobody"
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert cfg["WorkingDir"] == "/app"
    assert cfg["StopSignal"] == "SIGTERM"
    assert cfg["OnBuild"] == ["RUN make"]
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/"],
                                  "Interval": 30_000_000_000, "Timeout": 90_000_000_000,
                                  "Retries": 3}


def test_the_input_config_is_never_changed():
    before = {"Env": ["A=1"], "Labels": {"x": "y"}, "Cmd": ["sh"]}
    apply_changes(before, ["ENV A=2", "LABEL x=z", "ENTRYPOINT /e"])
    assert before == {"Env": ["A=1"], "Labels": {"x": "y"}, "Cmd": ["sh"]}


def test_env_replaces_a_variable_in_place():
    cfg = apply_changes({"Env": ["PATH=/bin", "A=1", "B=2"]}, ["ENV A=3 D=4"])
    assert cfg["Env"] == ["PATH=/bin", "A=3", "B=2", "D=4"]


def test_env_label_workdir_user_expand_variables_and_drop_quotes():
    cfg = apply_changes({"Env": ["PATH=/usr/bin", "HOME=/root"]}, [
        "ENV APP=/opt/app",
        "ENV PATH=$APP/bin:${PATH} Q=\"a b\" R=c\\ d S='$APP' T=${NOPE:-dflt} U=${APP:+set}",
        "LABEL home=$HOME", "WORKDIR $APP/run", "USER ${NOPE}nobody", "VOLUME $HOME/data"])
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"] == "/opt/app/bin:/usr/bin"
    assert env["Q"] == "a b" and env["R"] == "c d" and env["S"] == "$APP"
    assert env["T"] == "dflt" and env["U"] == "set"
    assert cfg["Labels"] == {"home": "/root"}
    assert cfg["WorkingDir"] == "/opt/app/run"
    assert cfg["User"] == "nobody"
    assert cfg["Volumes"] == {"/root/data": {}}


def test_cmd_and_entrypoint_are_not_expanded():
    cfg = apply_changes({"Env": ["X=1"]}, ["CMD echo $X", 'ENTRYPOINT ["run", "$X"]'])
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo $X"]
    assert cfg["Entrypoint"] == ["run", "$X"]


@pytest.mark.parametrize(("changes", "cmd"), [
    (["ENTRYPOINT /e"], None),                                   # resets the image's Cmd
    (["CMD run", "ENTRYPOINT /e"], ["/bin/sh", "-c", "run"]),    # a CMD before: kept
    (["ENTRYPOINT /e", "CMD run"], ["/bin/sh", "-c", "run"]),    # a CMD after: set again
    (["CMD []", "ENTRYPOINT /e"], None),                         # an empty CMD sets nothing
])
def test_entrypoint_resets_cmd_as_the_builder_does(changes, cmd):
    cfg = apply_changes({"Cmd": ["catalina.sh", "run"]}, changes)
    assert cfg["Cmd"] == cmd
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "/e"]


def test_shell_form_uses_the_configs_shell():
    cfg = apply_changes({"Shell": ["/bin/bash", "-o", "pipefail", "-c"]},
                        ["CMD echo hi", "ENTRYPOINT exec run"])
    assert cfg["Entrypoint"] == ["/bin/bash", "-o", "pipefail", "-c", "exec run"]
    assert cfg["Cmd"] == ["/bin/bash", "-o", "pipefail", "-c", "echo hi"]


def test_entrypoint_json_empty_and_bare():
    assert apply_changes({}, ["ENTRYPOINT []"])["Entrypoint"] == []
    assert apply_changes({"Entrypoint": ["x"]}, ["ENTRYPOINT"])["Entrypoint"] is None


@pytest.mark.parametrize(("current", "requested", "result"), [
    (None, "/app", "/app"),
    (None, "app", "/app"),
    ("/usr/local", "tomcat", "/usr/local/tomcat"),
    ("/usr/local/tomcat", "../lib/./x/", "/usr/local/lib/x"),
    ("/a", "/b/../c", "/b/../c"),         # an absolute path is taken as given
])
def test_workdir_is_relative_to_the_previous_one(current, requested, result):
    assert normalize_workdir(current, requested) == result
    cfg = apply_changes({"WorkingDir": current} if current else {}, [f"WORKDIR {requested}"])
    assert cfg["WorkingDir"] == result


def test_workdir_relative_steps_chain_within_one_commit():
    cfg = apply_changes({"WorkingDir": "/srv"}, ["WORKDIR a", "WORKDIR b", "WORKDIR ../c"])
    assert cfg["WorkingDir"] == "/srv/a/c"


def test_expose_ranges_protocols_and_host_parts():
    cfg = apply_changes({"ExposedPorts": {"22/tcp": {}}},
                        ["EXPOSE 8000-8002/UDP 127.0.0.1:8080:80 443/sctp"])
    assert cfg["ExposedPorts"] == {"22/tcp": {}, "8000/udp": {}, "8001/udp": {},
                                   "8002/udp": {}, "80/tcp": {}, "443/sctp": {}}


def test_volume_json_form_and_healthcheck_none():
    cfg = apply_changes({}, ['VOLUME ["/var/lib/mysql", "/etc/mysql/conf.d"]',
                             "HEALTHCHECK NONE", "STOPSIGNAL 9", "stopsignal rtmin+3"])
    assert cfg["Volumes"] == {"/var/lib/mysql": {}, "/etc/mysql/conf.d": {}}
    assert cfg["Healthcheck"] == {"Test": ["NONE"]}
    assert cfg["StopSignal"] == "rtmin+3"
    assert apply_changes({}, ['HEALTHCHECK CMD ["pg_isready"]'])["Healthcheck"] == {
        "Test": ["CMD", "pg_isready"]}


def test_blank_lines_and_comments_are_skipped():
    assert apply_changes({"User": "a"}, ["", "   ", "# USER b"]) == {"User": "a"}


@pytest.mark.parametrize(("change", "message"), [
    ("RUN apt-get update", "run is not a valid change command"),
    ("FROM ubuntu", "from is not a valid change command"),
    ("MAINTAINER me", "maintainer is not a valid change command"),
    ("ADD a /b", "add is not a valid change command"),
    ("ENV", "ENV requires at least one argument"),
    ("ENV A", "ENV must have two arguments"),
    ("ENV =x", "ENV names can not be blank"),
    ("ENV a=1 b", 'Syntax error - can\'t find = in "b". Must be of the form: name=value'),
    ("LABEL novalue", "LABEL must have two arguments"),
    ("ENV A=\"open", "unexpected end of statement while looking for matching \""),
    ("WORKDIR", "WORKDIR requires exactly one argument"),
    ("USER", "USER requires exactly one argument"),
    ("EXPOSE abc", "invalid containerPort: abc"),
    ("EXPOSE 80/xyz", "invalid proto: xyz"),
    ("EXPOSE 90-80", "invalid range specified for container port: 90-80"),
    ("EXPOSE", "EXPOSE requires at least one argument"),
    ("VOLUME", "VOLUME requires at least one argument"),
    ('VOLUME [""]', "VOLUME specified can not be an empty string"),
    ("STOPSIGNAL SIGNOPE", "Invalid signal: SIGNOPE"),
    ("STOPSIGNAL 0", "Invalid signal: 0"),
    ("HEALTHCHECK RUN x", 'Unknown type "RUN" in HEALTHCHECK (try CMD)'),
    ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
    ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
    ("HEALTHCHECK --retries=0 CMD x", "--retries must be at least 1 (not 0)"),
    ("HEALTHCHECK --interval=1us CMD x", 'Interval "interval" cannot be less than 1ms'),
    ("HEALTHCHECK --interval=soon CMD x", 'time: invalid duration "soon"'),
    ("HEALTHCHECK --every=1s CMD x", "Unknown flag: every"),
    ("ONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("ONBUILD FROM x", "FROM isn't allowed as an ONBUILD trigger"),
    ("ONBUILD", "ONBUILD requires at least one argument"),
])
def test_refused_changes_say_what_docker_says_and_apply_nothing(change, message):
    cfg = {"Env": ["A=1"]}
    with pytest.raises(ChangeInvalid) as e:
        apply_changes(cfg, ["ENV B=2", change])
    assert str(e.value) == message
    assert e.value.status == 400
    assert cfg == {"Env": ["A=1"]}
