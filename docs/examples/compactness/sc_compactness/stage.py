"""A stage that reads an earlier stage's results: compact or extended, from measured fluxes."""

from survey_classifier.columns import Column
from survey_classifier.stages.base import CutoutFailure, Stage

#: The fields a result carries beyond those of its kind, described for every output (unit, UCD).
COLUMNS = (
    Column("peak_to_integrated", "Peak over integrated flux density (about 1: unresolved)", unit="",
           ucd="src.morph.param", format=".3f"),
    Column("size_in_beams", "Largest angular size over the beam's major axis", unit="", ucd="phys.angSize;src",
           format=".2f"),
)


def compactness(measured, min_ratio):
    """Compact or extended from a measure result: an unresolved source has about as much
    flux per beam at its peak as in all (peak/integrated near 1); resolved emission less."""
    peak, total = measured["peak_flux_jy"], measured["integrated_flux_jy"]
    if not measured["n_islands"]:
        return CutoutFailure("no island above the measure stage's threshold")
    if not total:
        return CutoutFailure("no integrated flux from the measure stage (no pixel scale: the cutout has no WCS)")
    ratio = peak / total
    compact = min(max(ratio, 0.0), 1.0)
    return {
        "label": "compact" if ratio >= min_ratio else "extended",
        "probabilities": {"compact": compact, "extended": 1.0 - compact},
        "peak_to_integrated": ratio,                                   # extra keys are kept as `extra`
        "size_in_beams": (measured["las_arcsec"] or 0.0) / measured["beam_used"][0],
    }


class Compactness(Stage):
    """Compact or extended, from the ratio of peak to integrated flux of the measure stage."""

    name = "compactness"            # unique; used on the command line and in the database
    version = "1"                   # bump when outputs change for the same input
    result_kind = "classification"  # measurement | classification | som | anomaly
    requires = ("pixels", "stage:measure")   # also "wcs", "beam"
    result_columns = COLUMNS        # peak_to_integrated, size_in_beams: shown and exported with these

    def __init__(self, *, min_ratio=0.8):
        self.min_ratio = min_ratio          # stored under its own name

    def process(self, batch):
        # cutout.results["measure"]: the measure stage's result for this cutout
        return [compactness(cutout.results["measure"], self.min_ratio) for cutout in batch]
