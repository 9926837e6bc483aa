"""DoctorPanel: run `wsnb.doctor` from a notebook with a progress bar per check.

The doctor runs on wsnb's event-loop thread (where servers made in a notebook
live); its progress callback only stores numbers, and the panel's refresher
copies them into the bars' traits at most 10 times a second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Hashable
from typing import Any

import ipywidgets as widgets
import traitlets

from wsnb._secret import Secret, masked_url, optional_secret
from wsnb.client import check_url
from wsnb.doctor import CHECKS, SEVERITY_COLOURS, Report, _parse_checks, adoctor
from wsnb.loop import background_loop
from wsnb.widgets._base import Panel, esc

#: Bar colour once a check is done, by its worst severity.
BAR_STYLES = {"ok": "success", "info": "info", "warning": "warning", "error": "danger",
              "skipped": ""}


class DoctorPanel(Panel):
    """``DoctorPanel(url, token=None, **doctor_options)`` runs the doctor and shows it live.

    ``DoctorPanel(report)`` shows a finished `Report`. While running, each
    check has a bar (``bars[check]``, an `ipywidgets.FloatProgress` from 0 to
    1) and a status line; when done, ``report`` holds the `Report`, ``done``
    turns True and the coloured findings table appears. ``await
    panel.wait()`` (or ``panel.result()``) returns the report.
    """

    done = traitlets.Bool(False)
    status = traitlets.Unicode("")

    def __init__(self, target: str | Report, token: str | Secret | None = None, *,
                 autostart: bool = True, **doctor_options: Any) -> None:
        super().__init__(timeline=None, loop=background_loop())
        self.report: Report | None = None
        self.future: concurrent.futures.Future[Report] | None = None
        self._token = optional_secret(token)
        self._options = doctor_options
        self._progress: dict[str, tuple[float, str]] = {}
        if isinstance(target, Report):
            self.url = target.url
            checks = target.checks
        else:
            self.url = check_url(target)
            checks = _parse_checks(doctor_options.get("checks"))
        self.checks = list(checks)
        self.bars: dict[str, widgets.FloatProgress] = {}
        self.labels: dict[str, widgets.HTML] = {}
        rows = []
        for name in self.checks:
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=widgets.Layout(width="220px"))
            bar.add_class(f"wsnb-doctor-bar-{name}")
            label = widgets.HTML("<span style='color:#6b7280'>waiting</span>")
            self.bars[name], self.labels[name] = bar, label
            title = widgets.HTML(f"<span title='{esc(CHECKS[name])}'><b>{esc(name)}</b></span>",
                                 layout=widgets.Layout(width="90px"))
            rows.append(widgets.HBox([title, bar, label]))
        self.run_button = widgets.Button(description="Run again", icon="refresh",
                                         disabled=True)
        self.run_button.on_click(lambda _: self.start())
        self.status_label = widgets.HTML("")
        self.table = widgets.HTML("")
        self.table.add_class("wsnb-doctor-table")
        header = widgets.HTML(f"<b>Doctor</b> <code>{esc(masked_url(self.url))}</code>")
        self.children = [header, *rows, widgets.HBox([self.run_button, self.status_label]),
                         self.error_label, self.table]
        self.add_class("wsnb-doctor-panel")
        if isinstance(target, Report):
            self.run_button.disabled = True  # nothing to re-run from a bare report
            self._show(target)
        elif autostart:
            self.start()

    # ----- running ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.future is not None and not self.future.done()

    def start(self) -> concurrent.futures.Future[Report]:
        """Run the doctor (again) on wsnb's loop thread; returns its future."""
        if self.running:
            assert self.future is not None
            return self.future
        self.report = None
        self.done = False
        self.clear_error()
        self._progress = {}
        self.table.value = ""
        for name in self.checks:
            self.bars[name].value = 0.0
            self.bars[name].bar_style = ""
            self.labels[name].value = "<span style='color:#6b7280'>waiting</span>"
        self.run_button.disabled = True
        self.status = "running"
        self.status_label.value = "running…"
        self._start_refresher()
        self.future = self.command(self._run(), "doctor")
        self.future.add_done_callback(self._after)
        return self.future

    async def _run(self) -> Report:
        report = await adoctor(self.url, self._token, progress=self._on_progress,
                               **self._options)
        self._finished(report)  # before the future resolves: wait() sees a drawn panel
        return report

    def _on_progress(self, check: str, fraction: float, status: str) -> None:
        # on the loop thread, once per step: store only; the refresher draws
        self._progress[check] = (fraction, status)

    def _key(self) -> Hashable:
        return tuple(sorted(self._progress.items()))

    def _redraw(self) -> None:
        for name, (fraction, status) in list(self._progress.items()):
            if name not in self.bars:
                continue
            self.bars[name].value = fraction
            if fraction < 1.0:
                self.labels[name].value = f"<span>{esc(status)}</span>"

    def _finished(self, report: Report) -> None:
        self._redraw()
        self._show(report)

    def _after(self, future: concurrent.futures.Future[Report]) -> None:
        if self.refresher is not None:
            self.refresher.stop()
        self.run_button.disabled = False
        if future.cancelled() or future.exception() is not None:
            self.status = "failed"
            self.status_label.value = "stopped"
            self.done = True

    def _show(self, report: Report) -> None:
        self.report = report
        for name in self.checks:
            severity = report.severity(name)
            self.bars[name].value = 1.0
            self.bars[name].bar_style = BAR_STYLES.get(severity, "")
            colour = SEVERITY_COLOURS.get(severity, "#6b7280")
            self.labels[name].value = (f"<span style='color:{colour};font-weight:600'>"
                                       f"{esc(severity)}</span>")
        problems = len(report.problems)
        self.status = report.worst
        self.status_label.value = (f"done in {report.duration_s:.1f} s: "
                                   + (f"{problems} problem{'s' if problems != 1 else ''}"
                                      if problems else "no problems found"))
        self.table.value = report._repr_html_()
        self.done = True

    async def wait(self, timeout: float | None = None) -> Report:
        """Wait for the run to finish (from any event loop) and return the report."""
        if self.report is not None and not self.running:
            report = self.report
        elif self.future is None:
            raise RuntimeError("the doctor has not been started: call start()")
        else:
            report = await asyncio.wait_for(asyncio.wrap_future(self.future), timeout)
        self._refresh_static_from_kernel()
        return report

    def result(self, timeout: float | None = None) -> Report:
        """Block until the run finishes (not from wsnb's loop thread) and return the report."""
        if self.report is not None and not self.running:
            report = self.report
        elif self.future is None:
            raise RuntimeError("the doctor has not been started: call start()")
        else:
            report = self.future.result(timeout)
        self._refresh_static_from_kernel()
        return report

    def _refresh_static_from_kernel(self) -> None:
        # the summary left where the panel was displayed said "running": show the findings
        # (from the kernel's thread only, so the update belongs to the cell that waited)
        if threading.current_thread() is threading.main_thread():
            self.refresh_static()

    def close(self) -> None:
        """Stop a run in progress, then close the widgets."""
        if self.future is not None and not self.future.done():
            self.future.cancel()
        super().close()

    # ----- static rendering ---------------------------------------------------------------

    def text_summary(self) -> str:
        if self.report is not None:
            return self.report.summary()
        steps = ", ".join(f"{name} {self._progress.get(name, (0.0, ''))[0]:.0%}"
                          for name in self.checks)
        return f"Doctor on {masked_url(self.url)}: {steps}"

    def static_html(self) -> str:
        if self.report is not None:
            return self.report._repr_html_()
        return super().static_html()
