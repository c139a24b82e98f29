"""The HTML report (``roicurate report``, ``apply --report``) and the evaluation figures.

* ``roicurate.report.page``: the page: one section per unit, galleries, the plugins' sections; what this package
  re-exports (``write_report``, ``write_explanations``, ``ReportUnit``, ``ReportSection`` ...).
* ``roicurate.report.figures``: the page's figures (field of view, histogram, ROC / PR, galleries, explanations)
  and the two helpers every roicurate figure is made with (``figure``, ``save``).
* ``roicurate.report.evaluation``: what ``roicurate evaluate`` and ``train --test`` write: metrics.json,
  scores.csv and the ROC / PR / reliability / confusion figures.
"""
from roicurate.report.page import (ReportSection, ReportUnit, check_can_write, pipeline_name,
                                   write_explanations, write_report)

__all__ = ["ReportSection", "ReportUnit", "check_can_write", "pipeline_name", "write_explanations", "write_report"]
