"""`smartmask serve`: the config file's validation, deployments built without a server, and (integration) a real
Prefect server + `smartmask serve` subprocess whose deployment is triggered through the API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from flows.serve import local_server
from flows.serve_config import SECTIONS, ServeConfig, build_deployments, load_serve_config, register_section

# Waits in these tests guard against a hang; they are not speed requirements (a loaded 2-core machine can take
# minutes to start a Prefect server and run a flow), so a slow machine never changes a verdict.
HANG_GUARD_S = 600

GOOD = """
lake = "lake"
[[rebuild]]
name = "synth"
source = "cocoa:world/annotations.json"
images = "world/images"
cron = "0 3 * * *"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "smartmask.toml"
    p.write_text(text)
    return p


def _entry(**kv) -> str:
    base = {"name": '"synth"', "source": '"cocoa:a.json"', "images": '"img"', "cron": '"0 3 * * *"'}
    base.update(kv)
    return "[[rebuild]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


# ------------------------------------------------------------------------------------------------ validation


def test_good_config_resolves_relative_paths_against_its_directory(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_serve_config(_write(tmp_path, GOOD + 'timezone = "Europe/Paris"\nworkers = 1\n'
                                   'captioner = "instructblip:./models/blip"\n'))
    assert cfg.lake == tmp_path / "lake" and cfg.max_concurrent_runs == 1
    (e,) = cfg.rebuild
    assert e.name == "synth" and e.source == f"cocoa:{tmp_path}/world/annotations.json"
    assert e.images == str(tmp_path / "world" / "images")
    assert (e.schedule.cron, e.schedule.timezone) == ("0 3 * * *", "Europe/Paris")
    assert e.config_dict() == {"workers": 1, "captioner": f"instructblip:{tmp_path}/models/blip"}
    # a hub id stays as written; defaults: UTC, nothing overridden
    cfg = load_serve_config(_write(tmp_path, _entry(captioner='"instructblip:Salesforce/instructblip-x"')))
    assert cfg.lake is None and cfg.rebuild[0].schedule.timezone == "UTC"
    assert cfg.rebuild[0].config_dict() == {"captioner": "instructblip:Salesforce/instructblip-x"}


@pytest.mark.parametrize("text, needle", [
    (_entry(name=None), "missing key 'name'"),
    (_entry(source=None), "missing key 'source'"),
    (_entry(images=None), "missing key 'images'"),
    (_entry(cron=None), "missing key 'cron'"),
    (_entry(cron='"61 * * * *"'), "'cron' is not a valid cron"),
    (_entry(cron='"0 3 * *"'), "'cron' must have 5 fields"),
    (_entry(cron='"0 0 3 * * *"'), "'cron' must have 5 fields"),
    (_entry(cron="3"), "'cron' must be a string"),
    (_entry(timezone='"Mars/Olympus"'), "'timezone' is not an IANA"),
    (_entry(name='"a b"'), "'name' must be letters"),
    (_entry(name='""'), "'name' must not be empty"),
    (_entry(source='"coco:a.json"'), "'source' has unknown kind"),
    (_entry(source='"a.json"'), "'source' must look like"),
    (_entry(workers='"2"'), "'workers' must be an integer"),
    (_entry(workers="0"), "'workers' must be >= 1"),
    (_entry(shard_size="true"), "'shard_size' must be an integer"),
    (_entry(captioner='"blip"'), "'captioner' must be"),
    (_entry(crons='"0 3 * * *"'), "unknown key 'crons'"),
    (_entry() + _entry(), "duplicate name 'synth'"),
    ('lake = "x"\nschedule = 1\n' + _entry(), "unknown key 'schedule'"),
    ("lake = 3\n" + _entry(), "'lake' must be a string"),
    ("max_concurrent_runs = 0\n" + _entry(), "'max_concurrent_runs' must be >= 1"),
    ('rebuild = "x"\n', "'rebuild' must be an array of tables"),
    ('lake = "x"\n', "nothing to serve"),
    ("[[rebuild]\nname = 1\n", "not valid TOML"),
])
def test_each_bad_field_is_one_line_naming_it(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(ValueError) as ei:
        load_serve_config(p)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_entry_errors_name_the_entry(tmp_path):
    p = _write(tmp_path, _entry(name='"one"') + _entry(name='"two"', cron='"nope"'))
    with pytest.raises(ValueError, match=r"\[\[rebuild\]\] #2 \('two'\): 'cron'"):
        load_serve_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="serve config not found"):
        load_serve_config(tmp_path / "nope.toml")


def test_cli_exits_2_on_missing_or_invalid_config(tmp_path):
    from flows.cli import app

    r = CliRunner().invoke(app, ["serve", "--config", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and "serve config not found" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = CliRunner().invoke(app, ["serve", "--config", str(_write(tmp_path, _entry(cron='"x"')))])
    assert r.exit_code == 2 and "'cron'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------ deployments (no server)


def test_deployments_carry_schedule_and_plain_parameters(tmp_path):
    from flows.rebuild_dataset import rebuild_dataset
    from smartmask.config import RebuildConfig

    cfg = load_serve_config(_write(tmp_path, GOOD + 'timezone = "Europe/Paris"\nworkers = 1\nshard_size = 4\n'
                                   + _entry(name='"other"', cron='"*/15 * * * 1-5"')))
    d1, d2 = build_deployments(cfg)
    assert (d1.name, d1.flow_name, d2.name) == ("rebuild-synth", "rebuild_dataset", "rebuild-other")
    assert d1.entrypoint == "flows.rebuild_dataset.rebuild_dataset" and set(d1.tags) == {"smartmask", "rebuild"}
    (s,) = d1.schedules
    assert (s.schedule.cron, s.schedule.timezone, s.active) == ("0 3 * * *", "Europe/Paris", True)
    assert d2.schedules[0].schedule.cron == "*/15 * * * 1-5"
    assert d1.parameters == {"source": f"cocoa:{tmp_path}/world/annotations.json",
                             "images": str(tmp_path / "world" / "images"), "name": "synth",
                             "lake": str(tmp_path / "lake"), "config": {"shard_size": 4, "workers": 1}}
    assert "config" not in d2.parameters
    json.dumps(d1.parameters)  # what the API stores
    # the flow's own validation turns the plain dict back into a RebuildConfig
    bound = rebuild_dataset.validate_parameters(d1.parameters)
    assert bound["config"] == RebuildConfig(shard_size=4, workers=1)


def test_lake_defaults_to_env_when_config_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTMASK_LAKE", str(tmp_path / "envlake"))
    (d,) = build_deployments(load_serve_config(_write(tmp_path, _entry())))
    assert d.parameters["lake"] == str(tmp_path / "envlake")


def test_other_stages_can_register_sections(tmp_path):
    from prefect import flow

    @flow(name="ping")
    def ping(msg: str) -> str:
        return msg

    class Entry:
        def __init__(self, name, schedule):
            self.name, self.schedule = name, schedule

    from flows.serve_config import check_keys, parse_name, parse_schedule

    def parse(t, where, base):
        check_keys(t, {"name", "cron", "timezone"}, where)
        return Entry(parse_name(t, where), parse_schedule(t, where))

    def build(e, cfg: ServeConfig):
        return ping.to_deployment(name=f"ping-{e.name}", cron=e.schedule.cron, parameters={"msg": e.name})

    register_section("ping", parse, build)
    try:
        cfg = load_serve_config(_write(tmp_path, GOOD + '[[ping]]\nname = "p"\ncron = "* * * * *"\n'))
        assert [d.name for d in build_deployments(cfg)] == ["rebuild-synth", "ping-p"]
        with pytest.raises(ValueError, match=r"\[\[ping\]\] #1 \('p'\): missing key 'cron'"):
            load_serve_config(_write(tmp_path, '[[ping]]\nname = "p"\n'))
    finally:
        SECTIONS.pop("ping")


def test_local_server_uses_the_configured_api_and_starts_nothing(monkeypatch):
    def no_popen(*a, **k):
        raise AssertionError("must not start a server")

    monkeypatch.setattr(subprocess, "Popen", no_popen)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4321/api")
    with local_server() as ui:
        assert ui == "http://127.0.0.1:4321"


@pytest.mark.parametrize("script, needle", [
    ("import sys; print('port in use'); sys.exit(3)", "exited with code 3 before becoming healthy (port in use"),
    ("import time; time.sleep(60)", "not healthy after 1 s"),
])
def test_local_server_that_never_comes_up_is_one_line_error_and_is_stopped(tmp_path, monkeypatch, script, needle):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.serve import ServerError

    real_popen, started = subprocess.Popen, []

    def fake_popen(cmd, **kw):  # same process handling, a server that fails
        started.append(real_popen([sys.executable, "-c", script], **kw))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with (temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(ServerError) as ei,
          local_server(home=tmp_path, startup_timeout=1)):
        pass
    assert needle in str(ei.value) and "\n" not in str(ei.value)
    assert started[0].poll() is not None and "PREFECT_API_URL" not in os.environ
    assert list(tmp_path.glob("smartmask-server-*.log")), "the failed server's log is kept"


# ----------------------------------------------------------------------------------------------- integration


def _health(ui: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{ui}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def prefect_server(tmp_path, monkeypatch):
    """A real `prefect server` on a free loopback port with a temporary PREFECT_HOME, via `local_server`."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    home = tmp_path / "prefect-home"
    home.mkdir()
    with temporary_settings(restore_defaults={PREFECT_API_URL}), local_server(home=home, startup_timeout=HANG_GUARD_S) as ui:
        assert os.environ["PREFECT_API_URL"] == f"{ui}/api" and PREFECT_API_URL.value() == f"{ui}/api"
        yield ui, home
    assert not _health(ui), "the local server must be stopped on exit"
    assert not list(home.glob("smartmask-server-*.log")), "a clean run leaves no log behind"


@contextlib.contextmanager
def _process(cmd, **kw):
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        from flows.serve import _stop

        _stop(proc, grace=30)  # SIGTERM, then SIGKILL: nothing of its group may outlive the test


@pytest.mark.slow
def test_serve_registers_schedule_and_runs_on_demand(tmp_path, prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from smartmask.config import SynthConfig
    from smartmask.synth import generate

    t0 = time.monotonic()
    ui, home = prefect_server
    generate(tmp_path / "world", 6, seed=1, config=SynthConfig.small(), workers=1)
    cron = "0 3 1 1 *"  # never fires during a test
    cfg = _write(tmp_path, GOOD.replace("0 3 * * *", cron) + "workers = 1\nshard_size = 4\n")
    lake = tmp_path / "lake"
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    env = {**os.environ, "PREFECT_API_URL": f"{ui}/api", "PREFECT_HOME": str(home),
           "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path / "tmp")}  # Prefect's runner_storage goes there
    (tmp_path / "tmp").mkdir()
    env.pop("SMARTMASK_LAKE", None)

    def logs() -> str:
        return f"\n--- serve stdout:\n{out.read_text()}\n--- serve stderr (tail):\n{err.read_text()[-4000:]}"

    with out.open("w") as fo, err.open("w") as fe, _process(
            [sys.executable, "-m", "flows", "serve", "--config", str(cfg)],
            cwd=tmp_path / "world", env=env, stdout=fo, stderr=fe) as proc, get_client(sync_client=True) as client:
        name = "rebuild_dataset/rebuild-synth"
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}{logs()}"
            with contextlib.suppress(Exception):
                dep = client.read_deployment_by_name(name)
                break
            assert time.monotonic() < deadline, f"deployment {name} never appeared{logs()}"
            time.sleep(0.5)
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [(cron, "UTC", True)]
        assert dep.parameters["lake"] == str(lake) and dep.parameters["name"] == "synth"
        assert f"Prefect UI: {ui}" in out.read_text()

        run = run_deployment(name, timeout=HANG_GUARD_S, poll_interval=1, as_subflow=False)
        assert run.state is not None and run.state.is_completed(), f"flow run ended {run.state}{logs()}"

        manifests = list(lake.glob("datasets/name=synth/version=*/_manifest.json"))
        assert len(manifests) == 1, logs()
        assert manifests[0].parent.name == f"version={json.loads(manifests[0].read_text())['version']}"

        os.killpg(proc.pid, signal.SIGTERM)  # graceful stop: schedules paused, process exits 0
        assert proc.wait(30) == 0, logs()
        assert out.read_text().rstrip().endswith("stopped")
        assert client.read_deployment_by_name(name).paused
    print(f"serve integration: {time.monotonic() - t0:.1f} s")


# ------------------------------------------------------------------------------- [[bulk_insert]] (no server)

BULK = """
[[bulk_insert]]
name = "street"
catalog = "catalogs/street.csv"
"""


def _bulk(**kv) -> str:
    base = {"name": '"street"', "catalog": '"street.csv"'}
    base.update(kv)
    return "[[bulk_insert]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


def test_bulk_insert_table_resolves_paths_and_builds_an_unscheduled_deployment(tmp_path, monkeypatch):
    from flows.bulk_insert import NEWEST, bulk_insert
    from smartmask.bulk.config import BulkConfig

    monkeypatch.chdir("/")
    cfg = load_serve_config(_write(tmp_path, GOOD + BULK + 'model = "m-1a2b"\n'
                                   'inpainter = "./models/pipe"\nsegmenter = "../m2f"\n'
                                   'allow_roots = ["images", "/srv/shared"]\nallow_schemes = ["S3://", "gs"]\n'
                                   'n_suggestions = 3\nseed = 7\nsteps = 10\nray_address = "auto"\n'
                                   + _bulk(name='"plain"', catalog='"/data/plain.parquet"')))
    a, b = cfg.bulk_insert
    assert (a.name, a.catalog, a.ray_address, a.schedule) == ("street", f"{tmp_path}/catalogs/street.csv", "auto",
                                                              None)
    expected = {"model_version": "m-1a2b", "inpainter": f"{tmp_path}/models/pipe",
                "segmenter": str(tmp_path.parent / "m2f"), "allow_roots": [f"{tmp_path}/images", "/srv/shared"],
                "allow_schemes": ["s3", "gs"], "n_suggestions": 3, "seed": 7, "steps": 10}
    assert a.config_dict() == expected
    # defaults: the newest model at run time, the default inpainter, nothing else given
    assert b.config_dict() == {"model_version": NEWEST, "inpainter": "controlnet-sd15"}
    assert b.catalog == "/data/plain.parquet" and b.ray_address is None

    rebuild_dep, d1, d2 = build_deployments(cfg)
    assert rebuild_dep.name == "rebuild-synth"
    assert (d1.name, d1.flow_name, d2.name) == ("bulk-street", "bulk_insert", "bulk-plain")
    assert d1.entrypoint == "flows.bulk_insert.bulk_insert" and set(d1.tags) == {"smartmask", "bulk_insert"}
    assert d1.schedules == [] and d2.schedules == []
    assert "prefect deployment run bulk_insert/bulk-street" in d1.description
    assert d1.parameters == {"catalog": f"{tmp_path}/catalogs/street.csv", "run": "street", "config": expected,
                             "lake": str(tmp_path / "lake"), "ray_address": "auto"}
    assert d2.parameters == {"catalog": "/data/plain.parquet", "run": "plain-{model}", "lake": str(tmp_path / "lake"),
                             "config": {"model_version": NEWEST, "inpainter": "controlnet-sd15"}}
    json.dumps(d1.parameters)  # what the API stores
    # the flow's own validation turns the plain dict back into a BulkConfig
    bound = bulk_insert.validate_parameters(d1.parameters)
    assert bound["config"] == BulkConfig(model_version="m-1a2b", inpainter=f"{tmp_path}/models/pipe",
                                         segmenter=str(tmp_path.parent / "m2f"),
                                         allow_roots=(f"{tmp_path}/images", "/srv/shared"),
                                         allow_schemes=("s3", "gs"), n_suggestions=3, seed=7, steps=10)
    assert bulk_insert.validate_parameters(d2.parameters)["config"].model_version == NEWEST


def test_bulk_insert_inpainter_specs(tmp_path):
    def inpainter(spec: str) -> str:
        cfg = load_serve_config(_write(tmp_path, _bulk(inpainter=f'"{spec}"')))
        return cfg.bulk_insert[0].config_dict()["inpainter"]

    assert inpainter("synthetic") == "synthetic"
    assert inpainter("controlnet-sdxl") == "controlnet-sdxl"
    assert inpainter("sd-inpaint:org/base") == "sd-inpaint:org/base"  # hub ids as written
    assert inpainter("controlnet-sd15:./base+org/cn") == f"controlnet-sd15:{tmp_path}/base+org/cn"
    assert inpainter("controlnet-sd15:org/base+../cn") == f"controlnet-sd15:org/base+{tmp_path.parent}/cn"
    assert inpainter("/models/pipe") == "/models/pipe"  # need not exist when serving starts


def test_a_config_with_only_bulk_insert_tables_is_served(tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTMASK_LAKE", str(tmp_path / "envlake"))
    cfg = load_serve_config(_write(tmp_path, _bulk()))
    assert cfg.rebuild == () and [e.name for e in cfg.bulk_insert] == ["street"]
    (d,) = build_deployments(cfg)
    assert d.name == "bulk-street" and d.schedules == [] and d.parameters["lake"] == str(tmp_path / "envlake")


@pytest.mark.parametrize("text, needle", [
    (_bulk(name=None), "missing key 'name'"),
    (_bulk(catalog=None), "missing key 'catalog'"),
    (_bulk(cron='"0 3 * * *"'), "unknown key 'cron'"),
    (_bulk(run='"x"', modle='"m"'), "unknown keys 'modle', 'run'"),
    (_bulk(name='"a/b"'), "'name' must be letters"),
    (_bulk(name='"-x"'), "'name' must start with a letter or digit"),
    (_bulk(catalog="3"), "'catalog' must be a string"),
    (_bulk(model='""'), "'model' must not be empty"),
    (_bulk(model="1"), "'model' must be a string"),
    (_bulk(inpainter="true"), "'inpainter' must be a string"),
    (_bulk(inpainter='"dalle"'), "'inpainter' must be KIND"),
    (_bulk(inpainter='"synthetic:x"'), "'inpainter': inpainter 'synthetic' takes no source"),
    (_bulk(inpainter='"sd-inpaint:a+b"'), "'inpainter': inpainter 'sd-inpaint' takes no ControlNet"),
    (_bulk(segmenter="[1]"), "'segmenter' must be a string"),
    (_bulk(allow_roots='"images"'), "'allow_roots' must be an array of non-empty strings"),
    (_bulk(allow_roots='["a", 1]'), "'allow_roots' must be an array of non-empty strings"),
    (_bulk(allow_schemes='[""]'), "'allow_schemes' must be an array of non-empty strings"),
    (_bulk(allow_schemes='["s 3"]'), "'allow_schemes' must be URL schemes"),
    (_bulk(n_suggestions='"4"'), "'n_suggestions' must be an integer"),
    (_bulk(n_suggestions="0"), "'n_suggestions' must be 1..64"),
    (_bulk(n_suggestions="65"), "'n_suggestions' must be 1..64"),
    (_bulk(seed="-1"), "'seed' must be 0..4294967295"),
    (_bulk(seed="1.5"), "'seed' must be an integer"),
    (_bulk(steps="0"), "'steps' must be 1..1000"),
    (_bulk(steps="true"), "'steps' must be an integer"),
    (_bulk(ray_address="1"), "'ray_address' must be a string"),
    (_bulk() + _bulk(catalog='"other.csv"'), "duplicate name 'street'"),
    ('bulk_insert = "x"\n', "'bulk_insert' must be an array of tables"),
])
def test_each_bad_bulk_insert_field_is_one_line_naming_it(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(ValueError) as ei:
        load_serve_config(p)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg and str(p) in msg


def test_bulk_insert_errors_name_the_entry(tmp_path):
    p = _write(tmp_path, GOOD + _bulk(name='"one"') + _bulk(name='"two"', steps='"many"'))
    with pytest.raises(ValueError, match=r"\[\[bulk_insert\]\] #2 \('two'\): 'steps' must be an integer"):
        load_serve_config(p)
    with pytest.raises(ValueError, match=r"nothing to serve: add at least one \[\[rebuild\]\] or \[\[bulk_insert\]\]"):
        load_serve_config(_write(tmp_path, 'lake = "x"\n'))


def test_serve_prints_no_schedule_for_bulk_insert_deployments(tmp_path, monkeypatch):
    import prefect

    import flows.serve as serve_mod

    served = []

    @contextlib.contextmanager
    def fake_server():
        yield "http://127.0.0.1:1"

    monkeypatch.setattr(serve_mod, "local_server", fake_server)
    monkeypatch.setattr(prefect, "serve", lambda *ds, **kw: served.extend(ds))
    lines: list[str] = []
    serve_mod.serve(_write(tmp_path, GOOD + _bulk()), echo=lines.append)
    assert [d.name for d in served] == ["rebuild-synth", "bulk-street"]
    assert "deployment rebuild_dataset/rebuild-synth: cron '0 3 * * *' (UTC)" in lines
    assert ("deployment bulk_insert/bulk-street: no schedule (run it from the Prefect UI or "
            "`prefect deployment run bulk_insert/bulk-street`)") in lines
    assert lines[-1] == "stopped"


def test_bulk_insert_flow_resolves_newest_when_the_run_starts(tmp_path):
    from flows.bulk_insert import NEWEST, bulk_insert, resolve_newest
    from smartmask.bulk.config import BulkConfig
    from smartmask.inference.errors import BadInput

    lake = tmp_path / "lake"
    cfg = BulkConfig(model_version=NEWEST)
    with pytest.raises(BadInput, match="no model is registered") as ei:
        resolve_newest(lake, cfg)
    assert ei.value.field == "model"
    # the flow turns it into a failed run with that one line, before reading the catalog
    state = bulk_insert.fn(str(tmp_path / "missing.csv"), "street", cfg, str(lake))
    assert state.is_failed() and "no model is registered" in state.message
    for version, created in (("m-old", "2024-01-01T00:00:00Z"), ("m-new", "2024-06-01T00:00:00Z")):
        d = lake / "models" / f"version={version}"
        d.mkdir(parents=True)
        (d / "lineage.json").write_text(json.dumps({"version": version, "created_at": created}))
    assert resolve_newest(lake, cfg) == BulkConfig(model_version="m-new")
    pinned = BulkConfig(model_version="m-old")
    assert resolve_newest(lake, pinned) is pinned


def test_bulk_insert_table_workers_sets_every_stage(tmp_path):
    from flows.bulk_insert import bulk_insert

    cfg = load_serve_config(_write(tmp_path, _bulk(workers=3)))
    (entry,) = cfg.bulk_insert
    d = build_deployments(cfg)[0]
    got = bulk_insert.validate_parameters(d.parameters)["config"]
    assert {n: r.concurrency for n, r in got.stages.items()} == {
        n: 3 for n in ("decode", "layout", "suggest", "insert", "write", "fused")}
    for bad in ("0", '"two"', "2000"):
        with pytest.raises(ValueError, match="'workers'"):
            load_serve_config(_write(tmp_path, _bulk(workers=bad)))


def test_bulk_insert_table_placement(tmp_path):
    from flows.bulk_insert import bulk_insert

    cfg = load_serve_config(_write(tmp_path, _bulk(placement='"staged"')))
    d = build_deployments(cfg)[0]
    assert bulk_insert.validate_parameters(d.parameters)["config"].placement == "staged"
    with pytest.raises(ValueError, match="'placement' must be auto, fused or staged"):
        load_serve_config(_write(tmp_path, _bulk(placement='"everywhere"')))


# ---------------------------------------------------------------------------------- [[evaluate]] (no server)


def _eval(**kv) -> str:
    base = {"name": '"street"'}
    base.update(kv)
    return "[[evaluate]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


def test_evaluate_table_parses_every_key_and_defaults(tmp_path, monkeypatch):
    import sys as _sys

    monkeypatch.chdir("/")
    monkeypatch.delitem(_sys.modules, "flows.evaluate", raising=False)
    cfg = load_serve_config(_write(tmp_path, GOOD + _eval(
        model='"m-1a2b"', eval_set='"street-v1"', baselines='["box", "sd-inpaint:./sd", "inpaint-segment:org/m2f"]',
        guidance='["box", "point"]', n_suggestions=3, steps=10, inpainter='"./models/pipe"', workers=4,
        ray_address='"auto"', cron='"0 * * * *"', timezone='"Europe/Paris"') + _eval(name='"plain"')))
    assert "flows.evaluate" not in _sys.modules  # parsing loads no Prefect flow
    a, b = cfg.section("evaluate")
    assert (a.name, a.eval_set, a.workers, a.ray_address) == ("street", "street-v1", 4, "auto")
    assert (a.schedule.cron, a.schedule.timezone) == ("0 * * * *", "Europe/Paris")
    assert a.config_dict() == {"model_version": "m-1a2b", "baselines": ["box", f"sd-inpaint:{tmp_path}/sd",
                                                                        "inpaint-segment:org/m2f"],
                               "guidance": ["box", "point"], "n_suggestions": 3, "steps": 10,
                               "inpainter": f"{tmp_path}/models/pipe"}
    # defaults: the newest model when the run starts, its dataset's default set, on demand only
    assert b.config_dict() == {"model_version": "newest"}
    assert (b.eval_set, b.workers, b.ray_address, b.schedule) == (None, None, None, None)
    # `baselines = []`: none
    (e,) = load_serve_config(_write(tmp_path, _eval(baselines="[]"))).section("evaluate")
    assert e.config_dict()["baselines"] == []


def test_evaluate_deployments_parameters_and_schedule(tmp_path):
    from flows.evaluate import NEWEST, evaluate
    from smartmask.evaluation.config import EvalConfig

    cfg = load_serve_config(_write(tmp_path, GOOD + _eval(name='"nightly"', cron='"0 * * * *"', workers=3)
                                   + _eval(name='"pinned"', model='"m-1"', eval_set='"street-v1"',
                                           baselines='["box"]', steps=5, ray_address='"auto"')))
    rebuild_dep, d1, d2 = build_deployments(cfg)
    assert rebuild_dep.name == "rebuild-synth"
    assert (d1.name, d1.flow_name, d2.name) == ("eval-nightly", "evaluate", "eval-pinned")
    assert d1.entrypoint == "flows.evaluate.evaluate" and set(d1.tags) == {"smartmask", "evaluate"}
    (s,) = d1.schedules
    assert (s.schedule.cron, s.schedule.timezone, s.active) == ("0 * * * *", "UTC", True)
    assert d2.schedules == [] and "prefect deployment run evaluate/eval-pinned" in d2.description
    assert d1.parameters == {"config": {"model_version": NEWEST}, "lake": str(tmp_path / "lake"), "workers": 3}
    assert d2.parameters == {"config": {"model_version": "m-1", "baselines": ["box"], "steps": 5},
                             "lake": str(tmp_path / "lake"), "eval_set": "street-v1", "ray_address": "auto"}
    json.dumps(d1.parameters)  # what the API stores
    # the flow's own validation turns the plain dict back into an EvalConfig; no run name: the flow's default
    bound = evaluate.validate_parameters(d1.parameters)
    assert bound["config"] == EvalConfig(model_version=NEWEST) and bound.get("run") is None
    assert evaluate.validate_parameters(d2.parameters)["config"] == EvalConfig(model_version="m-1",
                                                                               baselines=("box",), steps=5)


def test_serve_prints_the_evaluate_schedule_or_none(tmp_path, monkeypatch):
    import prefect

    import flows.serve as serve_mod

    @contextlib.contextmanager
    def fake_server():
        yield "http://127.0.0.1:1"

    monkeypatch.setattr(serve_mod, "local_server", fake_server)
    monkeypatch.setattr(prefect, "serve", lambda *ds, **kw: None)
    lines: list[str] = []
    serve_mod.serve(_write(tmp_path, _eval(name='"hourly"', cron='"0 * * * *"') + _eval(name='"manual"')),
                    lake=str(tmp_path / "lake"), echo=lines.append)
    assert "deployment evaluate/eval-hourly: cron '0 * * * *' (UTC)" in lines
    assert ("deployment evaluate/eval-manual: no schedule (run it from the Prefect UI or "
            "`prefect deployment run evaluate/eval-manual`)") in lines


@pytest.mark.parametrize("text, needle", [
    (_eval(name=None), "missing key 'name'"),
    (_eval(catalog='"x.csv"'), "unknown key 'catalog'"),
    (_eval(modle='"m"', run='"x"'), "unknown keys 'modle', 'run'"),
    (_eval(name='"a/b"'), "'name' must be letters"),
    (_eval(model='""'), "'model' must not be empty"),
    (_eval(eval_set="1"), "'eval_set' must be a string"),
    (_eval(eval_set='"a/b"'), "'eval_set' must be an eval set name"),
    (_eval(baselines='"box"'), "'baselines' must be an array of non-empty strings"),
    (_eval(baselines='["dalle"]'), "'baselines': unknown baseline 'dalle'"),
    (_eval(baselines='["oracle:x"]'), "'baselines': baseline 'oracle' takes no model"),
    (_eval(baselines='["inpaint-segment"]'), "'baselines': baseline inpaint-segment needs a segmenter"),
    (_eval(baselines='["sd-inpaint:a+b"]'), "'baselines': inpainter 'sd-inpaint' takes no ControlNet"),
    (_eval(baselines='["box", "box"]'), "'baselines' lists 'box' more than once"),
    (_eval(guidance='["box", "lasso"]'), "'guidance' must be among none, box, point, scribble, got 'lasso'"),
    (_eval(guidance="[]"), "'guidance' must list at least one"),
    (_eval(n_suggestions="0"), "'n_suggestions' must be 1..64"),
    (_eval(n_suggestions="65"), "'n_suggestions' must be 1..64"),
    (_eval(steps="0"), "'steps' must be 1..1000"),
    (_eval(steps="true"), "'steps' must be an integer"),
    (_eval(inpainter='"dalle"'), "'inpainter' must be KIND"),
    (_eval(workers="0"), "'workers' must be 1..1024"),
    (_eval(workers='"two"'), "'workers' must be an integer"),
    (_eval(ray_address="1"), "'ray_address' must be a string"),
    (_eval(cron='"nope"'), "'cron' must have 5 fields"),
    (_eval(cron='"61 * * * *"'), "'cron' is not a valid cron expression"),
    (_eval(cron='"0 * * * *"', timezone='"Mars/Olympus"'), "'timezone' is not an IANA time zone name"),
    (_eval(timezone='"UTC"'), "'timezone' needs 'cron'"),
    (_eval() + _eval(), "duplicate name 'street'"),
    ('evaluate = "x"\n', "'evaluate' must be an array of tables"),
])
def test_each_bad_evaluate_field_is_one_line_naming_it(tmp_path, text, needle):
    p = _write(tmp_path, text)
    with pytest.raises(ValueError) as ei:
        load_serve_config(p)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg and str(p) in msg
    assert "[[evaluate]] #" in msg or "'evaluate' must be an array" in msg
