"""Longer fuzz runs of the hardening targets: the tar reader, the reference parser and the
registry's request handlers (``tests/hardening/fuzz_targets.py``).

    python benchmarks/fuzz.py                         # hypothesis, 60 s per target
    python benchmarks/fuzz.py --seconds 300 --engine atheris
    python benchmarks/fuzz.py --targets tar --engine both

``hypothesis`` runs the structured strategies of ``tests/hardening/strategies_fuzz.py``
(hostile tar headers, reference-like text, registry requests) in rounds until the time is
up; ``atheris`` (coverage-guided libFuzzer, when ``pip install atheris`` works) runs each
target in a child process with ``-max_total_time``. Prints a table and a JSON line; exits 1
when any target failed (hypothesis prints the falsifying input, atheris writes
``crash-*`` files into ``--artifacts``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "hardening"))

TARGETS = ("tar", "reference", "registry")


def run_hypothesis(target: str, seconds: float) -> dict:
    import fuzz_targets as ft
    import strategies_fuzz as sf
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    count = 0
    cfg = settings(max_examples=500, deadline=None, database=None, derandomize=False,
                   suppress_health_check=list(HealthCheck))
    reg = None
    if target == "tar":
        @cfg
        @given(st.one_of(sf.tars(), st.binary(max_size=8192)))
        def one(data: bytes) -> None:
            nonlocal count
            count += 1
            ft.tar_target(data)
    elif target == "reference":
        @cfg
        @given(sf.reference_text)
        def one(text: str) -> None:
            nonlocal count
            count += 1
            ft.reference_target(text)
    else:
        reg = ft.RegistryTarget(tempfile.mkdtemp(prefix="fuzz-reg-"))

        @cfg
        @given(sf.requests())
        def one(req) -> None:
            nonlocal count
            count += 1
            reg(*req)

    error = None
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            one()
        if reg is not None:
            reg.check_storage()
    except Exception as e:  # the falsifying example was printed by hypothesis
        error = f"{type(e).__name__}: {str(e)[:500]}"
    finally:
        if reg is not None:
            reg.close()
    return {"target": target, "engine": "hypothesis", "execs": count,
            "seconds": round(time.monotonic() - t0, 1), "failure": error}


def _atheris_child(target: str) -> None:
    import atheris

    with atheris.instrument_imports():
        import fuzz_targets as ft
    reg = ft.RegistryTarget(tempfile.mkdtemp(prefix="fuzz-reg-")) if target == "registry" \
        else None

    def one(data: bytes) -> None:
        if target == "tar":
            ft.tar_target(data)
        elif target == "reference":
            fdp = atheris.FuzzedDataProvider(data)
            ft.reference_target(fdp.ConsumeUnicodeNoSurrogates(200))
        else:
            fdp = atheris.FuzzedDataProvider(data)
            method = ft.METHODS[fdp.ConsumeIntInRange(0, len(ft.METHODS) - 1)]
            pieces = [ft.PATH_PIECES[fdp.ConsumeIntInRange(0, len(ft.PATH_PIECES) - 1)]
                      for _ in range(fdp.ConsumeIntInRange(1, 6))]
            headers = {}
            for k, v in ft.HEADER_CHOICES.items():
                if fdp.ConsumeBool():
                    headers[k] = v[fdp.ConsumeIntInRange(0, len(v) - 1)]
            assert reg is not None
            reg(method, "/v2/" + "/".join(pieces), headers, fdp.ConsumeBytes(400))

    # libFuzzer flags (-max_total_time=...) and crash files to replay pass through
    atheris.Setup([sys.argv[0], *sys.argv[3:]], one)
    atheris.Fuzz()


def run_atheris(target: str, seconds: float, artifacts: str) -> dict:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return {"target": target, "engine": "atheris", "execs": 0, "seconds": 0,
                "failure": None, "skipped": "atheris is not installed"}
    os.makedirs(artifacts, exist_ok=True)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, __file__, "--child", target,
                        f"-max_total_time={int(seconds)}", f"-artifact_prefix={artifacts}/",
                        "-rss_limit_mb=2048"],
                       capture_output=True, text=True, cwd=REPO)
    # libFuzzer ends with "Done <n> runs in <s> second(s)"; a crash stops before that
    runs = re.findall(r"Done (\d+) runs|^#(\d+)\s", r.stderr, re.MULTILINE)
    execs = max((int(a or b) for a, b in runs), default=0)
    failure = None if r.returncode == 0 else r.stderr[-1500:]
    return {"target": target, "engine": "atheris", "execs": execs,
            "seconds": round(time.monotonic() - t0, 1), "failure": failure}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _atheris_child(argv[1])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="per target and engine")
    ap.add_argument("--targets", nargs="*", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--engine", choices=["hypothesis", "atheris", "both"],
                    default="hypothesis")
    ap.add_argument("--artifacts", default=os.path.join(tempfile.gettempdir(),
                                                        "imagesim-fuzz"))
    args = ap.parse_args(argv)
    engines = ["hypothesis", "atheris"] if args.engine == "both" else [args.engine]
    rows = []
    for target in args.targets:
        for engine in engines:
            row = (run_hypothesis(target, args.seconds) if engine == "hypothesis"
                   else run_atheris(target, args.seconds, args.artifacts))
            rows.append(row)
            verdict = ("FAIL " + row["failure"][:200] if row["failure"]
                       else row.get("skipped", "ok"))
            print(f"{row['target']:<10} {row['engine']:<11} {row['execs']:>8} execs "
                  f"{row['seconds']:>7}s  {verdict}", flush=True)
    print(json.dumps({"fuzz": rows}))
    return 1 if any(r["failure"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
