"""The report: a sweep's records -> cell table, figures, findings and one HTML page.

``python -m overtraining.report <sweep dir(s)>`` (see ``__main__``); in code,
``build_report(dirs, out) -> Path`` of ``report.html``.
"""

from overtraining.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
