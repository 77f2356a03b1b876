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

__all__ = [
    "Base",
    "CutoutRow",
    "RunRow",
    "RunBatchRow",
    "ModelRow",
    "ArtefactRow",
    "StageSettingRow",
    "MeasurementRow",
    "ClassificationRow",
    "SOMPlacementRow",
    "AnomalyScoreRow",
    "ErrorRow",
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

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    sha256: Mapped[str | None] = mapped_column(String(64))
    hdu: Mapped[int | None] = mapped_column(Integer)
    ra_deg: Mapped[float | None] = mapped_column(Float)
    dec_deg: Mapped[float | None] = mapped_column(Float, index=True)
    #: HEALPix pixel of (ra_deg, dec_deg), nested scheme, order :data:`HEALPIX_ORDER`; filled by
    #: :func:`survey_classifier.db.store.upsert_cutouts`, used by cone searches.
    healpix: Mapped[int | None] = mapped_column(BigInteger)
    pixel_scale_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_major_arcsec: Mapped[float | None] = mapped_column(Float)
    beam_minor_arcsec: Mapped[float | None] = mapped_column(Float)
    shape_y: Mapped[int | None] = mapped_column(Integer)
    shape_x: Mapped[int | None] = mapped_column(Integer)
    catalogue_id: Mapped[str | None] = mapped_column(String(256), index=True)
    catalogue: Mapped[dict | None] = mapped_column(JSON)
    warnings: Mapped[list | None] = mapped_column(JSON)
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


class ModelRow(Base):
    """A registered model artefact (ONNX network, SOM, anomaly scorer...).

    ``store`` says where its bytes are: ``database`` (the ``artefacts`` row
    of the same sha256), ``package:MODULE/RESOURCE`` (shipped with an
    installed package) or an fsspec URL.
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


class _ResultColumns:
    """Columns shared by every per-stage result table."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stage: Mapped[str] = mapped_column(String(64))
    stage_version: Mapped[str] = mapped_column(String(32))
    model_ref: Mapped[str] = mapped_column(String(256), default="")
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @declared_attr
    def cutout_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey("cutouts.id", ondelete="CASCADE"))

    @declared_attr
    def run_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("runs.id", ondelete="SET NULL"), index=True)

    @declared_attr
    def __table_args__(cls):
        return (UniqueConstraint("cutout_id", "stage", "stage_version", "model_ref"),)


class MeasurementRow(_ResultColumns, Base):
    __tablename__ = "measurements"

    peak_flux_jy: Mapped[float | None] = mapped_column(Float)
    integrated_flux_jy: Mapped[float | None] = mapped_column(Float)
    n_islands: Mapped[int | None] = mapped_column(Integer)
    las_arcsec: Mapped[float | None] = mapped_column(Float)
    centroid_offset_arcsec: Mapped[float | None] = mapped_column(Float)
    asymmetry: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON)


class ClassificationRow(_ResultColumns, Base):
    __tablename__ = "classifications"

    label: Mapped[str] = mapped_column(String(128), index=True)
    probability: Mapped[float | None] = mapped_column(Float)
    probabilities: Mapped[dict] = mapped_column(JSON)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dtype: Mapped[str | None] = mapped_column(String(16))
    extra: Mapped[dict | None] = mapped_column(JSON)


class SOMPlacementRow(_ResultColumns, Base):
    __tablename__ = "som_placements"

    node_x: Mapped[int] = mapped_column(Integer)
    node_y: Mapped[int] = mapped_column(Integer)
    angle_deg: Mapped[float] = mapped_column(Float)
    flip: Mapped[bool] = mapped_column(Boolean)
    distance: Mapped[float] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON)


class AnomalyScoreRow(_ResultColumns, Base):
    __tablename__ = "anomaly_scores"

    score: Mapped[float | None] = mapped_column(Float, index=True)
    components: Mapped[dict] = mapped_column(JSON)
    partial: Mapped[bool] = mapped_column(Boolean, default=False)
    rank: Mapped[int | None] = mapped_column(Integer)
    percentile: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[dict | None] = mapped_column(JSON)


class ErrorRow(_ResultColumns, Base):
    """An error recorded against one cutout for one stage (``read`` for the reader)."""

    __tablename__ = "errors"

    hdu: Mapped[int | None] = mapped_column(Integer)
    error_type: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)


class SourceLabelRow(Base):
    """What a user said about one source, and who said it when.

    Rows are only added (never updated): the newest row of a cutout is its
    current label, the older ones its history. A row never touches the
    pipeline's results.
    """

    __tablename__ = "source_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cutout_id: Mapped[int] = mapped_column(ForeignKey("cutouts.id", ondelete="CASCADE"), index=True)
    #: A class, from a list or free text (``FRII``, ``hybrid``, ``artefact`` ...).
    label: Mapped[str | None] = mapped_column(String(128))
    #: True: interesting, False: not interesting, None: not said.
    interesting: Mapped[bool | None] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    #: Where the label came from: ``api``, ``cli`` or ``import:FILE``.
    origin: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NeuronLabelRow(Base):
    """What a user said about one neuron of one SOM map (``model_ref``), and who said it when.

    Rows are only added; the newest row of a neuron is its current label.
    """

    __tablename__ = "neuron_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The registry's ``name:version`` of the map (``som_placements.model_ref``).
    model_ref: Mapped[str] = mapped_column(String(256))
    node_x: Mapped[int] = mapped_column(Integer)
    node_y: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(128))
    origin: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


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
