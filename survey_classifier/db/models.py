"""Tables of the results database.

One row per cutout (``cutouts``), per run (``runs``) and per model
(``models``, whose bytes are in ``artefacts`` or another store named by the
row); one table per result kind (``measurements``,
``classifications``, ``som_placements``, ``anomaly_scores``) and one for the
errors recorded against cutouts (``errors``). What users say about sources and SOM neurons is kept apart
from what the pipeline computed (``source_labels``, ``neuron_labels``), as
are the fits that re-rank the anomalies by those labels
(``label_rankings``).

A result is identified by ``(cutout_id, stage, stage_version, model_ref)``:
re-running the same stage version with the same model updates the row in
place, a new stage version or model adds a row beside the old one.
``model_ref`` is the registry's ``name:version`` of the model that made the
result, with its ``model_sha256`` beside it; both come from the
:class:`~survey_classifier.modelref.ModelRef` the registry handed the
stage. ``model_ref`` is ``""`` for stages without a model (never NULL, so
the unique constraint holds on every database).

Every column that reaches a query's output describes itself here
(``info=describe(...)``: unit, UCD, description, display format; see
:mod:`survey_classifier.columns`); the catalogue's own columns are
described in ``catalogue_columns``.

The schema is created and changed only by the Alembic migrations in
``migrations/``; these classes must match them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from survey_classifier.columns import ColumnFamily, describe

__all__ = [
    "Base",
    "CutoutRow",
    "RunRow",
    "RunBatchRow",
    "ModelRow",
    "ArtefactRow",
    "StageSettingRow",
    "CatalogueColumnRow",
    "MeasurementRow",
    "ClassificationRow",
    "SOMPlacementRow",
    "AnomalyScoreRow",
    "ErrorRow",
    "ResultRunRow",
    "MosaicTileRow",
    "SourceLabelRow",
    "NeuronLabelRow",
    "LabelRankingRow",
    "RESULT_TABLES",
    "HEALPIX_ORDER",
    "utcnow",
]

#: HEALPix order of ``cutouts.healpix`` (nested scheme; nside = 2**14, pixels of ~13 arcsec).
HEALPIX_ORDER = 14

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class CutoutRow(Base):
    """One input cutout, identified by its resolved path."""

    __tablename__ = "cutouts"

    id: Mapped[int] = mapped_column(
        Integer, primary_key=True, info=describe("Identifier of the cutout in this results database (cutout_id)",
                                                 ucd="meta.id;meta.main"))
    path: Mapped[str] = mapped_column(
        String(1024), unique=True,
        info=describe("Path (or URL) of the cutout's FITS file on the machine that classified it; for a cutout cut "
                      "from mosaic tiles, its mosaic: path", ucd="meta.id;meta.file"))
    sha256: Mapped[str | None] = mapped_column(
        String(64), info=describe("SHA-256 checksum of the cutout file as classified", ucd="meta.checksum"))
    hdu: Mapped[int | None] = mapped_column(
        Integer, info=describe("Index of the FITS HDU holding the image (0 = primary)", ucd="meta.id;meta.file"))
    #: Position of the source: the catalogue's (``catalogue_ra_deg``) when it gave one, else the WCS
    #: centre of the cutout. Cone searches use it.
    ra_deg: Mapped[float | None] = mapped_column(
        Float, info=describe("Right ascension (ICRS) of the source: the input catalogue's when it gives one, "
                             "else the WCS centre of the cutout", unit="deg", ucd="pos.eq.ra;meta.main",
                             format=".6f"))
    dec_deg: Mapped[float | None] = mapped_column(
        Float, index=True,
        info=describe("Declination (ICRS) of the source: the input catalogue's when it gives one, "
                      "else the WCS centre of the cutout", unit="deg", ucd="pos.eq.dec;meta.main", format=".6f"))
    #: The position the input catalogue gave (converted to degrees), None without one.
    catalogue_ra_deg: Mapped[float | None] = mapped_column(
        Float, info=describe("Right ascension given by the input catalogue, in degrees", unit="deg",
                             ucd="pos.eq.ra", format=".6f"))
    catalogue_dec_deg: Mapped[float | None] = mapped_column(
        Float, info=describe("Declination given by the input catalogue, in degrees", unit="deg",
                             ucd="pos.eq.dec", format=".6f"))
    #: World coordinates of the cutout's central pixel, from its WCS (None without a celestial WCS).
    wcs_ra_deg: Mapped[float | None] = mapped_column(
        Float, info=describe("Right ascension (ICRS) of the central pixel of the cutout, from its WCS",
                             unit="deg", ucd="pos.eq.ra;instr.pixel", format=".6f"))
    wcs_dec_deg: Mapped[float | None] = mapped_column(
        Float, info=describe("Declination (ICRS) of the central pixel of the cutout, from its WCS",
                             unit="deg", ucd="pos.eq.dec;instr.pixel", format=".6f"))
    #: HEALPix pixel of (ra_deg, dec_deg), nested scheme, order :data:`HEALPIX_ORDER`; filled by
    #: :func:`survey_classifier.db.store.upsert_cutouts`, used by cone searches.
    healpix: Mapped[int | None] = mapped_column(BigInteger)
    pixel_scale_arcsec: Mapped[float | None] = mapped_column(
        Float, info=describe("Angular size of one pixel of the cutout", unit="arcsec", ucd="instr.scale",
                             format=".3f"))
    beam_major_arcsec: Mapped[float | None] = mapped_column(
        Float, info=describe("Major axis (FWHM) of the restoring beam, from the header (BMAJ)", unit="arcsec",
                             ucd="phys.angSize.smajAxis;instr.beam", format=".3f"))
    beam_minor_arcsec: Mapped[float | None] = mapped_column(
        Float, info=describe("Minor axis (FWHM) of the restoring beam, from the header (BMIN)", unit="arcsec",
                             ucd="phys.angSize.sminAxis;instr.beam", format=".3f"))
    shape_y: Mapped[int | None] = mapped_column(
        Integer, info=describe("Rows of the cutout image", unit="pix", ucd="meta.number;instr.pixel"))
    shape_x: Mapped[int | None] = mapped_column(
        Integer, info=describe("Columns of the cutout image", unit="pix", ucd="meta.number;instr.pixel"))
    catalogue_id: Mapped[str | None] = mapped_column(
        String(256), index=True, info=describe("Source identifier from the input catalogue's id column",
                                               ucd="meta.id"))
    catalogue: Mapped[dict | None] = mapped_column(JSON)
    warnings: Mapped[list | None] = mapped_column(JSON)
    #: For a cutout cut from mosaic tiles: ``{"tile": URL, "x": X, "y": Y, "tiles": [NAMES]}``.
    origin: Mapped[dict | None] = mapped_column(
        JSON, info=describe("For a cutout cut from mosaic tiles: the tile and the catalogue position's pixel on it "
                            "(query columns tile, tile_x, tile_y)", ucd="meta.ref"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RunRow(Base):
    """One invocation of the pipeline over a set of inputs."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(32), default="running")
    executor: Mapped[str] = mapped_column(String(32), default="in-process")
    config: Mapped[dict] = mapped_column(JSON)
    stages: Mapped[list] = mapped_column(JSON)
    n_cutouts: Mapped[int] = mapped_column(Integer, default=0)
    n_processed: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    #: ``PID@HOST`` of the process that drives the run (processes it in-process, or queues it).
    owner: Mapped[str | None] = mapped_column(String(256))
    #: When the owner last said it was alive; None once a Celery run is fully queued.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunBatchRow(Base):
    """One batch of a run: the unit of work queued, retried and tracked."""

    __tablename__ = "run_batches"
    __table_args__ = (UniqueConstraint("run_id", "batch_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    batch_index: Mapped[int] = mapped_column(Integer)
    cutout_ids: Mapped[list] = mapped_column(JSON)
    n_cutouts: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(256))
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Times a worker began this batch (counted before processing: a delivery that killed its process counts).
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_worker: Mapped[str | None] = mapped_column(String(256))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Why the batch failed (status "failed"), in words.
    failure: Mapped[str | None] = mapped_column(Text)
    #: Progress of a batch processed one cutout at a time after too many deliveries
    #: (:mod:`survey_classifier.deliveries`); None until then.
    split: Mapped[dict | None] = mapped_column(JSON)


class ModelRow(Base):
    """A registered model artefact (ONNX network, SOM, anomaly scorer...).

    ``store`` says where its bytes are: ``database`` (the ``artefacts`` row
    of the same sha256), ``package:MODULE/RESOURCE`` (shipped with an
    installed package) or an fsspec URL. ``companions`` lists the files
    registered with the artefact (a map's ``neurons.json``), each
    ``{"filename", "sha256", "store", "details"}`` and kept as the artefact is.
    """

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(256))
    store: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    details: Mapped[dict | None] = mapped_column(JSON)
    companions: Mapped[list | None] = mapped_column(JSON)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    retired: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArtefactRow(Base):
    """The bytes of a model artefact kept in the database, addressed by their sha256."""

    __tablename__ = "artefacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StageSettingRow(Base):
    """Whether a stage runs when ``--stages`` is not given (plugins are off until enabled)."""

    __tablename__ = "stage_settings"

    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class CatalogueColumnRow(Base):
    """Unit, UCD and description of a column carried through from input catalogues.

    Values are kept per cutout in ``cutouts.catalogue``; a column name has
    one unit across the database (a catalogue giving another is refused).
    """

    __tablename__ = "catalogue_columns"

    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    unit: Mapped[str | None] = mapped_column(String(128))
    ucd: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class _ResultColumns:
    """Columns shared by every per-stage result table."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), info=describe("Name of the stage", ucd="meta.id"))
    stage_version: Mapped[str] = mapped_column(
        String(32), info=describe("Version of the stage that made this result", ucd="meta.version"))
    model_ref: Mapped[str] = mapped_column(
        String(256), default="",
        info=describe("Registry name:version of the model that made this result (empty: no model)",
                      ucd="meta.id;meta.software"))
    model_sha256: Mapped[str | None] = mapped_column(
        String(64), info=describe("SHA-256 checksum of the model that made this result", ucd="meta.checksum"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @declared_attr
    def cutout_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey("cutouts.id", ondelete="CASCADE"))

    @declared_attr
    def run_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True,
                             info=describe("Run that last wrote this result", ucd="meta.id"))

    @declared_attr
    def __table_args__(cls):
        return (UniqueConstraint("cutout_id", "stage", "stage_version", "model_ref"),)


class MeasurementRow(_ResultColumns, Base):
    __tablename__ = "measurements"

    peak_flux_jy: Mapped[float | None] = mapped_column(
        Float, info=describe("Peak surface brightness above the sigma-clipped background", unit="Jy/beam",
                             ucd="phot.flux.density;stat.max", format=".5g"))
    integrated_flux_jy: Mapped[float | None] = mapped_column(
        Float, info=describe("Integrated flux density of the islands above the threshold (sum over the beam "
                             "area)", unit="Jy", ucd="phot.flux.density", format=".5g"))
    n_islands: Mapped[int | None] = mapped_column(
        Integer, info=describe("Number of islands of emission above the threshold", unit="", ucd="meta.number"))
    las_arcsec: Mapped[float | None] = mapped_column(
        Float, info=describe("Largest angular size: the greatest distance between two pixels of the islands",
                             unit="arcsec", ucd="phys.angSize", format=".2f"))
    centroid_offset_arcsec: Mapped[float | None] = mapped_column(
        Float, info=describe("Distance of the flux-weighted centroid of the islands from the cutout centre",
                             unit="arcsec", ucd="pos.angDistance", format=".2f"))
    asymmetry: Mapped[float | None] = mapped_column(
        Float, info=describe("Rotational asymmetry of the emission about the cutout centre: 0 symmetric, "
                             "towards 1 one-sided", unit="", ucd="src.morph.param", format=".4f"))
    extra: Mapped[dict | None] = mapped_column(JSON)


class ClassificationRow(_ResultColumns, Base):
    __tablename__ = "classifications"

    label: Mapped[str] = mapped_column(
        String(128), index=True, info=describe("Predicted class (the most probable)", ucd="src.class"))
    probability: Mapped[float | None] = mapped_column(
        Float, info=describe("Probability of the predicted class", unit="", ucd="stat.probability",
                             format=".4f"))
    probabilities: Mapped[dict] = mapped_column(
        JSON, info={"family": ColumnFamily("p_{key}", "Probability of class {key}", unit="",
                                           ucd="stat.probability", format=".4f")})
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dtype: Mapped[str | None] = mapped_column(
        String(16), info=describe("NumPy type of the stored embedding vector", ucd="meta.code"))
    extra: Mapped[dict | None] = mapped_column(JSON)


class SOMPlacementRow(_ResultColumns, Base):
    __tablename__ = "som_placements"

    node_x: Mapped[int] = mapped_column(
        Integer, info=describe("Column (x) of the best-matching node of the SOM", unit="", ucd="pos.cartesian.x"))
    node_y: Mapped[int] = mapped_column(
        Integer, info=describe("Row (y) of the best-matching node of the SOM", unit="", ucd="pos.cartesian.y"))
    angle_deg: Mapped[float] = mapped_column(
        Float, info=describe("Rotation of the cutout that best matches the node's prototype", unit="deg",
                             ucd="pos.posAng", format=".1f"))
    flip: Mapped[bool] = mapped_column(
        Boolean, info=describe("Whether the best match is the mirrored cutout", ucd="meta.code"))
    distance: Mapped[float] = mapped_column(
        Float, info=describe("Euclidean distance between the preprocessed cutout and the node's prototype",
                             unit="", ucd="stat.fit.residual", format=".4g"))
    extra: Mapped[dict | None] = mapped_column(JSON)


class AnomalyScoreRow(_ResultColumns, Base):
    __tablename__ = "anomaly_scores"

    score: Mapped[float | None] = mapped_column(
        Float, index=True, info=describe("Anomaly score: weighted mean of the components' percentiles in the "
                                         "reference catalogue (0-1, higher is more unusual)", unit="",
                                         ucd="stat.value", format=".4f"))
    components: Mapped[dict] = mapped_column(
        JSON, info={"family": ColumnFamily("{key}", "Anomaly score component {key}", unit="", ucd="stat.value",
                                           format=".4g")})
    partial: Mapped[bool] = mapped_column(
        Boolean, default=False, info=describe("Whether the score lacks some of its components", ucd="meta.code"))
    rank: Mapped[int | None] = mapped_column(
        Integer, info=describe("Rank of the score within its run (1 = most anomalous)", unit="", ucd="stat.rank"))
    percentile: Mapped[float | None] = mapped_column(
        Float, info=describe("Percentile of the score within its run (0-100)", unit="", ucd="stat.value",
                             format=".2f"))
    extra: Mapped[dict | None] = mapped_column(JSON)


class ErrorRow(_ResultColumns, Base):
    """An error recorded against one cutout for one stage (``read`` for the reader)."""

    __tablename__ = "errors"

    hdu: Mapped[int | None] = mapped_column(
        Integer, info=describe("Index of the FITS HDU at fault, when known", ucd="meta.id;meta.file"))
    error_type: Mapped[str] = mapped_column(
        String(128), info=describe("Kind of failure (the exception type)", ucd="meta.code.error"))
    message: Mapped[str] = mapped_column(Text, info=describe("What was wrong, for an astronomer", ucd="meta.note"))


class ResultRunRow(Base):
    """One run that wrote or confirmed one result (or one stored error): the provenance of reruns.

    A result row holds the run that wrote it last (``run_id``); a second
    run of the same cutouts, stage version and model updates that row in
    place, and this table keeps that the first run wrote it too. A run
    that reads a stored result instead of computing it (the same stage
    version and model) confirms it.
    """

    __tablename__ = "result_runs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    cutout_id: Mapped[int] = mapped_column(ForeignKey("cutouts.id", ondelete="CASCADE"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(64), primary_key=True)
    stage_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_ref: Mapped[str] = mapped_column(String(256), primary_key=True)


class MosaicTileRow(Base):
    """The footprint of one survey mosaic tile, indexed once and read again only when the tile changes.

    ``version`` is the tile's modification time (or an object's ETag) when
    indexed; ``wcs_header`` the celestial WCS cards; ``radius_deg`` the
    largest distance from the centre to a corner of the image.
    """

    __tablename__ = "mosaic_tiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(1024), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[str] = mapped_column(String(128))
    hdu: Mapped[int] = mapped_column(Integer)
    naxis1: Mapped[int] = mapped_column(Integer)
    naxis2: Mapped[int] = mapped_column(Integer)
    wcs_header: Mapped[str] = mapped_column(Text)
    ra_deg: Mapped[float] = mapped_column(Float)
    dec_deg: Mapped[float] = mapped_column(Float)
    radius_deg: Mapped[float] = mapped_column(Float)
    pixel_scale_arcsec: Mapped[float] = mapped_column(Float)
    beam_major_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_minor_arcsec: Mapped[float | None] = mapped_column(Float)
    indexed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SourceLabelRow(Base):
    """What a user said about one source, and who said it when.

    Rows are only added (never updated): the newest row of a cutout is its
    current label, the older ones its history. A row never touches the
    pipeline's results.
    """

    __tablename__ = "source_labels"

    id: Mapped[int] = mapped_column(
        Integer, primary_key=True, info=describe("Identifier of the label in this results database", ucd="meta.id"))
    cutout_id: Mapped[int] = mapped_column(ForeignKey("cutouts.id", ondelete="CASCADE"), index=True)
    #: A class, from a list or free text (``FRII``, ``hybrid``, ``artefact`` ...).
    label: Mapped[str | None] = mapped_column(
        String(128), info=describe("Class a user gave the source (from a list or free text)", ucd="src.class"))
    #: True: interesting, False: not interesting, None: not said.
    interesting: Mapped[bool | None] = mapped_column(
        Boolean, info=describe("Whether a user found the source interesting (empty: not said)", ucd="meta.code"))
    note: Mapped[str | None] = mapped_column(Text, info=describe("A user's note on the source", ucd="meta.note"))
    author: Mapped[str] = mapped_column(
        String(128), info=describe("Who gave the label", ucd="meta.id;meta.curation"))
    #: Where the label came from: ``api``, ``cli`` or ``import:FILE``.
    origin: Mapped[str | None] = mapped_column(
        String(512), info=describe("Where the label came from: api, cli or import:FILE", ucd="meta.note"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow,
        info=describe("When the label was given (UTC, ISO 8601)", ucd="time.creation"))


class NeuronLabelRow(Base):
    """What a user said about one neuron of one SOM map (``model_ref``), and who said it when.

    Rows are only added; the newest row of a neuron is its current label.
    """

    __tablename__ = "neuron_labels"

    id: Mapped[int] = mapped_column(
        Integer, primary_key=True, info=describe("Identifier of the label in this results database", ucd="meta.id"))
    #: The registry's ``name:version`` of the map (``som_placements.model_ref``).
    model_ref: Mapped[str] = mapped_column(
        String(256), info=describe("Registry name:version of the SOM map whose neuron is labelled",
                                   ucd="meta.id;meta.software"))
    node_x: Mapped[int] = mapped_column(
        Integer, info=describe("Column (x) of the labelled neuron on the map (from 0)", unit="",
                               ucd="pos.cartesian.x"))
    node_y: Mapped[int] = mapped_column(
        Integer, info=describe("Row (y) of the labelled neuron on the map (from 0)", unit="", ucd="pos.cartesian.y"))
    label: Mapped[str] = mapped_column(
        String(128), info=describe("Class a user gave the neuron", ucd="src.class"))
    note: Mapped[str | None] = mapped_column(Text, info=describe("A user's note on the neuron", ucd="meta.note"))
    author: Mapped[str] = mapped_column(
        String(128), info=describe("Who gave the label", ucd="meta.id;meta.curation"))
    origin: Mapped[str | None] = mapped_column(
        String(512), info=describe("Where the label came from: api, cli or import:FILE", ucd="meta.note"))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow,
        info=describe("When the label was given (UTC, ISO 8601)", ucd="time.creation"))


class LabelRankingRow(Base):
    """One fit of the anomaly ranking to the users' interesting / not interesting labels.

    Its scores are ``anomaly_scores`` rows of stage ``stage`` whose
    ``model_ref`` is ``model_ref`` (``label-ranking:ID``); the fit is fixed by
    the labels up to ``last_label_id``, the ``features`` (stage variants) and
    the ``method`` with its ``blend`` parameters.
    """

    __tablename__ = "label_rankings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(64))
    model_ref: Mapped[str] = mapped_column(String(256))
    #: The unsupervised anomaly scores blended with: ``{"stage": ..., "version": ..., "model_ref": ...}``.
    unsupervised: Mapped[dict] = mapped_column(JSON)
    #: The stored results the supervised model read: ``{stage: "VERSION@MODEL"}`` and the feature names.
    features: Mapped[dict] = mapped_column(JSON)
    blend: Mapped[dict] = mapped_column(JSON)
    n_labels: Mapped[int] = mapped_column(Integer)
    n_interesting: Mapped[int] = mapped_column(Integer)
    last_label_id: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict | None] = mapped_column(JSON)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


#: Result table for each result kind of :data:`survey_classifier.stages.base.RESULT_KINDS`.
RESULT_TABLES = {
    "measurement": MeasurementRow,
    "classification": ClassificationRow,
    "som": SOMPlacementRow,
    "anomaly": AnomalyScoreRow,
}

Index("ix_cutouts_ra_dec", CutoutRow.ra_deg, CutoutRow.dec_deg)
# Cone searches read (id, ra, dec) of the candidates from this index alone (an index-only scan).
Index("ix_cutouts_healpix_position", CutoutRow.healpix, CutoutRow.ra_deg, CutoutRow.dec_deg, CutoutRow.id)

# Variant look-ups (the newest stage version/model of each stage), top-N anomalies and SOM nodes
# are index seeks even with millions of result rows.
for _row_class in (MeasurementRow, ClassificationRow, SOMPlacementRow, AnomalyScoreRow):
    Index(
        f"ix_{_row_class.__tablename__}_variant_updated",
        _row_class.stage,
        _row_class.stage_version,
        _row_class.model_ref,
        _row_class.updated_at,
    )
del _row_class
Index("ix_neuron_labels_neuron", NeuronLabelRow.model_ref, NeuronLabelRow.node_x, NeuronLabelRow.node_y)
Index(
    "ix_anomaly_scores_variant_score",
    AnomalyScoreRow.stage,
    AnomalyScoreRow.stage_version,
    AnomalyScoreRow.model_ref,
    AnomalyScoreRow.score,
)
Index(
    "ix_som_placements_variant_node",
    SOMPlacementRow.stage,
    SOMPlacementRow.stage_version,
    SOMPlacementRow.model_ref,
    SOMPlacementRow.node_x,
    SOMPlacementRow.node_y,
)
