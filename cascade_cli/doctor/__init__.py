"""``cascade doctor``: the troubleshooting guide, automated on both ends of the link.

Checks return data (``CheckResult``); ``render.py`` turns a ``Report`` into a table or JSON.
"""

from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import CheckResult
from cascade_cli.doctor.runner import CHECKS, Report, run_doctor, select_checks

__all__ = ["CHECKS", "CheckResult", "DoctorContext", "Report", "run_doctor", "select_checks"]
