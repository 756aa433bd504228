"""Common data model: a study's schema, each site's mapping, harmonization and data checks.

A study declares its variables in a schema file (:class:`Schema`); each site maps its own table
to it in a mapping file (:class:`SiteMapping`). :func:`check_table` harmonizes a raw table
(units converted, codes recoded, missing codes marked; no row dropped), validates it with a
pandera schema built from the schema file and returns the site's :class:`SiteReport`, of which
only :meth:`SiteReport.shareable` (aggregate counts, small cells suppressed) leaves the site.
"""

from fedcare.data.cdm.harmonize import Harmonized, Problem, harmonize
from fedcare.data.cdm.io import read_table
from fedcare.data.cdm.mapping import SiteMapping, VariableMapping
from fedcare.data.cdm.report import SMALL_CELL, CheckResult, SiteReport, VariableReport, check_table
from fedcare.data.cdm.schema import CheckThresholds, Schema, Variable
from fedcare.data.cdm.sitedata import (
    analysis_frame,
    build_federation,
    feature_names,
    feature_units,
    to_site_data,
)
from fedcare.data.cdm.units import conversion
from fedcare.data.cdm.validate import build_pandera_schema, validate_table

__all__ = [
    "SMALL_CELL",
    "CheckResult",
    "CheckThresholds",
    "Harmonized",
    "Problem",
    "Schema",
    "SiteMapping",
    "SiteReport",
    "Variable",
    "VariableMapping",
    "VariableReport",
    "analysis_frame",
    "build_federation",
    "build_pandera_schema",
    "check_table",
    "conversion",
    "feature_names",
    "feature_units",
    "harmonize",
    "read_table",
    "to_site_data",
    "validate_table",
]
