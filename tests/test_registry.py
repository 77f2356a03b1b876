"""The model registry: one identity from registration to result row, artefacts every worker can fetch.

Real models only: the shipped ONNX network, SOM map and anomaly scorer, and
real files of the wrong kind for the refusals.
"""

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select

from survey_classifier.artefacts import fetch
from survey_classifier.checksum import sha256_file
from survey_classifier.cli import main
from survey_classifier.db.models import ArtefactRow, ClassificationRow, ModelRow, SOMPlacementRow
from survey_classifier.errors import ModelError, SurveyClassifierError
from survey_classifier.registry import (
    get_model,
    list_models,
    model_for,
    register_model,
    resolve_model,
    retire_model,
    seed_shipped_models,
    set_default,
)
from survey_classifier.stages.anomaly import ANOMALY_MIRABEST, ANOMALY_MIRABEST_4, ANOMALY_MIRABEST_5, AnomalyStage
from survey_classifier.stages.cnn import FR_CNN, FR_CNN_2, FR_CNN_3, CNNStage
from survey_classifier.stages.registry import available_stages
from survey_classifier.stages.som import SOM_MIRABEST, SOM_MIRABEST_2, SOM_MIRABEST_3

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")

SHIPPED = {
    f"{m.name}:{m.version}": m
    for m in (FR_CNN, FR_CNN_2, FR_CNN_3, SOM_MIRABEST, SOM_MIRABEST_2, SOM_MIRABEST_3,
              ANOMALY_MIRABEST, ANOMALY_MIRABEST_4, ANOMALY_MIRABEST_5)
}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A model cache of the test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(folder))
    return folder / "artefacts"


def _counts(engine):
    with engine.connect() as connection:
        return tuple(
            connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (ModelRow, ArtefactRow)
        )


def test_shipped_models_are_registry_entries_from_the_start(engine):
    table = list_models(engine)
    table = table[[stage in ("cnn", "som", "anomaly") for stage in table["stage"]]]  # not an installed plugin's
    assert {(r["stage"], r["model_ref"]) for r in table if r["is_default"]} == {
        ("cnn", "fr-cnn:1"), ("som", "som-mirabest:3"), ("anomaly", "anomaly-mirabest:4"),
    }  # the morphology map and the scorer fitted on its distances
    assert sorted(table["model_ref"]) == sorted(SHIPPED)
    for row in table:
        shipped = SHIPPED[row["model_ref"]]
        assert row["store"] == f"package:survey_classifier/{shipped.resource}"
        assert row["sha256"] == shipped.sha256 == sha256_file(shipped.path())  # the declared bytes are the file's
        assert "# " in get_model(engine, id=int(row["id"]))["details"]["card"]


@pytest.mark.parametrize(
    "missing",
    [
        (("som-mirabest", "3"), ("anomaly-mirabest", "4")),  # made before som-mirabest 3 was shipped
        (("anomaly-mirabest", "4"),),  # made when som-mirabest 3 was shipped but not the default
    ],
)
def test_a_database_made_before_new_shipped_defaults_gets_them_on_upgrade_and_keeps_its_own(engine, caplog, missing):
    with engine.begin() as connection:
        for name, version in missing:
            connection.execute(delete(ModelRow).where(ModelRow.name == name, ModelRow.version == version))
    set_default(engine, "som-mirabest", "1")
    set_default(engine, "anomaly-mirabest", "3")
    with caplog.at_level("WARNING", logger="survey_classifier.registry"):
        assert seed_shipped_models(engine) == sorted(f"{name}:{version}" for name, version in missing)
    (notice,) = [r.getMessage() for r in caplog.records if r.name == "survey_classifier.registry"]
    assert notice == (
        "this database keeps its default models anomaly-mirabest:3, som-mirabest:1; new databases default to "
        "anomaly-mirabest:4, som-mirabest:3: switch with `survey-classifier models set-default anomaly-mirabest 4` "
        "and `survey-classifier models set-default som-mirabest 3`"
    )
    caplog.clear()
    assert seed_shipped_models(engine) == [] and not caplog.records
    table = list_models(engine)
    assert {row["model_ref"]: row["is_default"] for row in table if row["stage"] in ("som", "anomaly")} == {
        "som-mirabest:1": True, "som-mirabest:2": False, "som-mirabest:3": False,
        "anomaly-mirabest:3": True, "anomaly-mirabest:4": False, "anomaly-mirabest:5": False,
    }  # fmt: skip
    assert resolve_model(engine, "som", "som-mirabest").ref == "som-mirabest:3"  # still the newest version


def test_register_keeps_the_bytes_in_the_database_and_fetch_verifies_them(engine, cache):
    model = register_model(engine, FR_CNN.path(), stage="cnn", name="fr-cnn", version="9", metrics={"accuracy": 0.9})
    assert model["store"] == "database" and model["sha256"] == FR_CNN.sha256
    assert model["same_bytes_as"] == ["fr-cnn:1"] and not model["is_default"]
    assert model["details"]["artefact"]["classes"] == ["FRI", "FRII"]
    ref = resolve_model(engine, "cnn", "fr-cnn", "9")
    local = fetch(ref, engine)
    assert local.path == cache / FR_CNN.sha256 / "model.onnx" and sha256_file(local.path) == FR_CNN.sha256
    local.path.write_bytes(b"damaged in the cache")  # a damaged copy is fetched again
    assert sha256_file(fetch(ref, engine).path) == FR_CNN.sha256
    with engine.begin() as connection:  # damaged in the store itself: refused
        connection.execute(ArtefactRow.__table__.update().values(content=b"not the model"))
    local.path.unlink()
    with pytest.raises(ModelError, match=f"not the registered {FR_CNN.sha256}"):
        fetch(ref, engine)
    assert not any(cache.rglob("model.onnx")) and not any(cache.rglob(".model.onnx.*"))


def test_one_default_per_stage_and_retire(engine):
    register_model(engine, FR_CNN.path(), stage="cnn", name="fr-cnn", version="9")
    set_default(engine, "fr-cnn", "9")
    defaults = {(r["stage"], r["model_ref"]) for r in list_models(engine) if r["is_default"]}
    assert ("cnn", "fr-cnn:9") in defaults and ("cnn", "fr-cnn:1") not in defaults
    assert resolve_model(engine, "cnn").ref == "fr-cnn:9"
    assert resolve_model(engine, "cnn", "fr-cnn").ref == "fr-cnn:9"  # newest not retired
    retire_model(engine, "fr-cnn", "9")
    assert get_model(engine, "fr-cnn", "9")["retired"] and not get_model(engine, "fr-cnn", "9")["is_default"]
    with pytest.raises(ModelError, match="no default model for stage 'cnn'"):
        resolve_model(engine, "cnn")
    assert resolve_model(engine, "cnn", "fr-cnn").ref == "fr-cnn:3"  # the newest shipped version
    with pytest.raises(ModelError, match="retired"):
        resolve_model(engine, "cnn", "fr-cnn", "9")
    with pytest.raises(ModelError, match="retired"):
        set_default(engine, "fr-cnn", "9")
    assert sorted(r["model_ref"] for r in list_models(engine, stage="cnn", include_retired=False)) == [
        "fr-cnn:1", "fr-cnn:2", "fr-cnn:3"]


def test_the_same_bytes_give_the_same_ref(engine, tmp_path):
    """A file named directly takes the identity of the registered entry with its bytes, wherever it lies."""
    copy = tmp_path / "elsewhere" / "som.npz"
    copy.parent.mkdir()
    copy.write_bytes(SOM_MIRABEST.path().read_bytes())
    from survey_classifier.stages.som import SOMStage

    assert model_for(engine, SOMStage, str(copy)).ref == "som-mirabest:1"
    assert SOMStage(model=str(copy)).model_ref == "som-mirabest:1"  # without a database too
    assert model_for(engine, SOMStage, "som-mirabest").ref == "som-mirabest:3"  # the newest version
    assert model_for(engine, SOMStage, "som-mirabest:1").sha256 == SOM_MIRABEST.sha256
    with pytest.raises(ModelError, match="neither a model registered for this stage"):
        model_for(engine, SOMStage, "som-mirabest:9")


def test_an_unregistered_file_is_named_by_its_bytes_and_kept_for_workers(engine, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(FR_CNN.path())
    model.doc_string = "a retouched copy: the same network, other bytes"
    path = tmp_path / "retouched.onnx"
    onnx.save(model, path)
    ref = model_for(engine, CNNStage, str(path))
    sha256 = sha256_file(path)
    assert not ref.registered and ref.ref == f"file:retouched.onnx@{sha256[:12]}" and ref.store == "database"
    path.unlink()  # the bytes travel through the database
    assert sha256_file(fetch(ref, engine).path) == sha256


@pytest.mark.parametrize(
    ("stage", "artefact", "match"),
    [
        ("cnnx", FR_CNN, "no stage named 'cnnx' is installed; stages that take a model: anomaly, cnn, som"),
        ("measure", FR_CNN, "stage 'measure' takes no model"),
        ("som", FR_CNN, r"model.onnx is not a SOM map \(an .npz archive written by `survey-classifier train som`\)"),
        ("cnn", SOM_MIRABEST, "som.npz is not an ONNX model that ONNX Runtime can load"),
        ("anomaly", SOM_MIRABEST, "som.npz is not an anomaly scorer written by `survey-classifier train anomaly`"),
        ("som", ANOMALY_MIRABEST, "scorer.npz: not a survey-classifier SOM"),
    ],
)
def test_what_a_stage_cannot_run_is_refused_and_nothing_is_left(engine, cache, stage, artefact, match):
    before = _counts(engine)
    with pytest.raises(ModelError, match=match) as refused:
        register_model(engine, artefact.path(), stage=stage, name="bad", version="1", make_default=True)
    assert "\n" not in str(refused.value)  # one line
    assert _counts(engine) == before and not cache.exists()
    assert {r["model_ref"] for r in list_models(engine) if r["is_default"]} >= {"fr-cnn:1", "som-mirabest:3"}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "../evil"}, SurveyClassifierError, "is not allowed"),
        ({"version": "1/2"}, SurveyClassifierError, "is not allowed"),
        ({"stage": ""}, SurveyClassifierError, "is not allowed"),
        ({"metrics": [1, 2]}, SurveyClassifierError, "mapping"),
        ({"version": "1"}, ModelError, "fr-cnn:1 is already registered; register a new version instead"),
        ({"store": "/not/a/url"}, ModelError, "is not a URL"),
    ],
)
def test_bad_registrations_are_refused(engine, kwargs, error, match):
    before = _counts(engine)
    args = {"stage": "cnn", "name": "fr-cnn", "version": "7", **kwargs}
    with pytest.raises(error, match=match):
        register_model(engine, FR_CNN.path(), **args)
    assert _counts(engine) == before
    with pytest.raises(ModelError, match="is not a file"):
        register_model(engine, FR_CNN.path().parent / "absent.onnx", stage="cnn", name="fr-cnn", version="8")


def test_an_object_store_url_keeps_the_bytes_outside_the_database(engine, tmp_path, cache):
    store = tmp_path / "bucket"
    model = register_model(engine, SOM_MIRABEST.path(), stage="som", name="som-big", version="1",
                           store=f"file://{store}")
    target = store / SOM_MIRABEST.sha256 / "som.npz"
    assert model["store"] == f"file://{target}" and target.is_file()
    assert _counts(engine)[1] == 0  # nothing in the database's artefacts table
    assert fetch(resolve_model(engine, "som", "som-big"), engine).path == target
    with pytest.raises(ModelError, match="already registered"):
        register_model(engine, SOM_MIRABEST.path(), stage="som", name="som-big", version="1", store=f"file://{store}")
    assert target.is_file()  # the object registered before is not removed by a refusal


def _classify(url, files, *args):
    result = CliRunner().invoke(main, ["classify", *map(str, files), "--db", url, "--quiet", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _refs(engine, row_class, stage):
    with engine.connect() as connection:
        return dict(connection.execute(
            select(row_class.model_ref, func.count()).where(row_class.stage == stage).group_by(row_class.model_ref)
        ).all())


def test_a_new_default_cnn_version_is_what_the_rows_say(sqlite_url, engine, mirabest_files):
    files = mirabest_files[:8]
    _classify(sqlite_url, files, "--stages", "measure,cnn")
    cli = CliRunner()
    done = cli.invoke(main, ["models", "register", "--db", sqlite_url, "--stage", "cnn", "--name", "fr-cnn",
                             "--version", "9", str(FR_CNN.path())])
    assert done.exit_code == 0 and "note: the same bytes are registered as fr-cnn:1" in done.output, done.output
    assert "default of stage cnn: fr-cnn:9" in cli.invoke(main, ["models", "set-default", "--db", sqlite_url,
                                                                 "fr-cnn", "9"]).output
    output = _classify(sqlite_url, files, "--stages", "measure,cnn")
    assert "cnn 1 (fr-cnn:9)" in output
    assert _refs(engine, ClassificationRow, "cnn") == {"fr-cnn:1": 8, "fr-cnn:9": 8}  # version 1's rows intact
    with engine.connect() as connection:
        shas = set(connection.execute(select(ClassificationRow.model_sha256)).scalars())
    assert shas == {FR_CNN.sha256}
    compared = cli.invoke(main, ["models", "compare", "--db", sqlite_url, "cnn", "1@fr-cnn:1", "1@fr-cnn:9"])
    assert compared.exit_code == 0, compared.output
    assert "8 cutouts classified by both" in compared.output and "agreement 1.000" in compared.output


def test_a_new_default_som_and_scorer_are_what_the_rows_say(sqlite_url, engine, mirabest_files):
    from survey_classifier.db.models import AnomalyScoreRow

    files = mirabest_files[:6]
    assert "som 2 (som-mirabest:3), anomaly 2 (anomaly-mirabest:4)" in _classify(sqlite_url, files)
    set_default(engine, "som-mirabest", "1")  # the first map, as in a database made before version 3
    assert "som 2 (som-mirabest:1)" in _classify(sqlite_url, files, "--stages", "measure,som")
    assert _refs(engine, SOMPlacementRow, "som") == {"som-mirabest:3": 6, "som-mirabest:1": 6}
    refused = CliRunner().invoke(main, ["classify", *map(str, files), "--db", sqlite_url, "--quiet"])
    assert refused.exit_code == 1 and "fitted on som results" in refused.output  # the scorer knows its map
    assert "this run's som results come from 2@som-mirabest:1" in refused.output

    set_default(engine, "anomaly-mirabest", "3")  # the scorer fitted on version 1's distances
    assert "anomaly 2 (anomaly-mirabest:3)" in _classify(sqlite_url, files)
    assert _refs(engine, AnomalyScoreRow, "anomaly") == {"anomaly-mirabest:4": 6, "anomaly-mirabest:3": 6}
    assert AnomalyStage().model_ref == "anomaly-mirabest:4"  # without a database: the shipped default


def test_fr_cnn_3_runs_with_its_own_scorer_and_each_scorer_refuses_the_other_cnn(sqlite_url, engine, mirabest_files):
    from survey_classifier.db.models import AnomalyScoreRow

    files = mirabest_files[:6]
    set_default(engine, "fr-cnn", "3")
    refused = CliRunner().invoke(main, ["classify", *map(str, files), "--db", sqlite_url, "--quiet"])
    assert refused.exit_code == 1 and "fitted on cnn results" in refused.output  # version 4 knows fr-cnn:1
    set_default(engine, "anomaly-mirabest", "5")
    output = _classify(sqlite_url, files)
    assert "cnn 1 (fr-cnn:3)" in output and "anomaly 2 (anomaly-mirabest:5)" in output
    assert _refs(engine, AnomalyScoreRow, "anomaly") == {"anomaly-mirabest:5": 6}
    set_default(engine, "fr-cnn", "1")  # and version 5 knows fr-cnn:3
    refused = CliRunner().invoke(main, ["classify", *map(str, files), "--db", sqlite_url, "--quiet"])
    assert refused.exit_code == 1 and "this run's cnn results come from 1@fr-cnn:1" in refused.output


def test_cli_register_list_show_default_retire(sqlite_url):
    cli = CliRunner()

    def invoke(*args):
        return cli.invoke(main, ["models", *args, "--db", sqlite_url])

    listing = invoke("list").output
    shipped = sum(len(stage.shipped_models) for stage in available_stages().values())  # with installed plugins'
    assert "fr-cnn:1" in listing and "fr-cnn:2" in listing and "som-mirabest:3" in listing
    assert f"{shipped} models" in listing
    card = FR_CNN.path().parent / "MODEL_CARD.md"
    done = invoke("register", "--stage", "cnn", "--name", "fr-cnn", "--version", "9", "--metrics",
                  '{"accuracy": 0.9}', "--card", str(card), str(FR_CNN.path()))
    assert done.exit_code == 0 and FR_CNN.sha256 in done.output, done.output
    shown = json.loads(invoke("show", "fr-cnn", "9", "--json").output)
    assert shown["metrics"] == {"accuracy": 0.9} and shown["details"]["card"] == card.read_text()
    assert "artefact_path" not in shown and shown["store"] == "database"
    assert "default of stage cnn: fr-cnn:9" in invoke("set-default", "fr-cnn", "9").output
    assert "retired fr-cnn:1" in invoke("retire", "fr-cnn", "1").output
    bad = invoke("register", "--stage", "cnn", "--name", "x", "--version", "1", "--metrics", "{oops",
                 str(FR_CNN.path()))
    assert bad.exit_code == 2 and "--metrics" in bad.output
    refused = invoke("register", "--stage", "cnnx", "--name", "x", "--version", "1", str(FR_CNN.path()))
    assert refused.exit_code == 1 and refused.output.strip().startswith("Error: no stage named 'cnnx'")
    assert "Traceback" not in refused.output and len(refused.output.strip().splitlines()) == 1
    missing = invoke("show", "nope")
    assert missing.exit_code == 1 and "no registered model named 'nope'" in missing.output


def test_shipped_fr_cnn_2_and_3_run_beside_version_1_and_compare(sqlite_url, engine, mirabest_files):
    """fr-cnn:2 and :3 are registered, not the default (the shipped scorer is pinned to fr-cnn:1), and comparable."""
    files = mirabest_files[:8]
    table = list_models(engine, stage="cnn")
    assert {row["model_ref"]: row["is_default"] for row in table} == {"fr-cnn:1": True, "fr-cnn:2": False,
                                                                     "fr-cnn:3": False}
    assert "calibrated" in get_model(engine, "fr-cnn", "2")["details"]["card"]
    assert "d8" in get_model(engine, "fr-cnn", "3")["details"]["card"]
    assert "cnn 1 (fr-cnn:1)" in _classify(sqlite_url, files, "--stages", "measure,cnn")
    for version in ("2", "3"):
        answer = _classify(sqlite_url, files, "--stages", "measure,cnn", "--param", f"cnn.model=fr-cnn:{version}")
        assert f"cnn 1 (fr-cnn:{version})" in answer
    assert _refs(engine, ClassificationRow, "cnn") == {"fr-cnn:1": 8, "fr-cnn:2": 8, "fr-cnn:3": 8}
    with engine.connect() as connection:
        shas = set(connection.execute(select(ClassificationRow.model_sha256)).scalars())
    assert shas == {FR_CNN.sha256, FR_CNN_2.sha256, FR_CNN_3.sha256}
    for other in ("fr-cnn:2", "fr-cnn:3"):
        compared = CliRunner().invoke(main, ["models", "compare", "--db", sqlite_url, "cnn", "1@fr-cnn:1",
                                             f"1@{other}"])
        assert compared.exit_code == 0, compared.output
        assert "8 cutouts classified by both" in compared.output
    assert CNNStage().model_ref == "fr-cnn:1"  # without a database: the shipped default
