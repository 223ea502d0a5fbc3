"""The live view's web page: a Bokeh server that shows one run (needs ``labpgt[live]``).

Each open page polls the run every `POLL_MS` through one shared `RunSource`, which reads
the file only when its size or time stamp changed; with no page open nothing is read.
What a page costs is mostly the browser drawing it (benchmarks/live_view.py): every change
the page gets redraws a figure, and a change of the status line lays out the whole page.
So a new shot changes the spectrum figure alone (trace, drive marker, title, in one go);
the status line and the settings plots follow every `SETTINGS_EVERY_S`; the axes have
ranges set here, widened only when the data leave them, so a redraw does not rescale them.
The page's data sources carry names (``spectrum``, ``latest``, ``settings``, ``response``,
``metrics``, ``batches``), and so do the ranges this module sets (``spectrum_x``,
``spectrum_y``, ``settings_x``, ``settings_<column>``), so that a browser test can read
what is shown.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from labpgt.errors import UserError
from labpgt.live.source import RunSource, Snapshot

POLL_MS = 100
"""How often an open page looks at the run (ms); unchanged, a look costs one stat() call."""
SETTINGS_EVERY_S = 5.0
"""The settings-over-the-run plots (three figures of up to thousands of points) and the
status line are redrawn at most this often (at once when the run is complete or nothing was
shown yet); the spectrum follows every new shot."""
DEFAULT_PORT = 5006
LINGER_S = 300.0
"""A view started by --live stops this long after its run ended with no page open."""
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def port_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, near: int = DEFAULT_PORT) -> int:
    """``near`` or the next free port above it (up to 50 tried), else one the OS picks."""
    for port in range(near, min(near + 50, 65536)):
        if port_free(host, port):
            return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


# ---- the page --------------------------------------------------------------------------------
def _figure(title: str, x_label: str, y_label: str, **kw: Any) -> Any:
    from bokeh.plotting import figure

    fig = figure(
        title=title,
        x_axis_label=x_label,
        y_axis_label=y_label,
        height=kw.pop("height", 260),
        sizing_mode="stretch_width",
        tools="pan,wheel_zoom,box_zoom,reset,save,hover",
        **kw,
    )
    fig.title.text_font_size = "13pt"
    fig.xaxis.axis_label_text_font_size = "11pt"
    fig.yaxis.axis_label_text_font_size = "11pt"
    fig.xaxis.major_label_text_font_size = "10pt"
    fig.yaxis.major_label_text_font_size = "10pt"
    return fig


def _integer_ticks(fig: Any) -> None:
    from bokeh.models import BasicTicker, NumeralTickFormatter

    fig.xaxis.ticker = BasicTicker(min_interval=1, desired_num_ticks=8)
    fig.xaxis.formatter = NumeralTickFormatter(format="0")


class Page:
    """The models of one open page and how a `Snapshot` updates them."""

    def __init__(self, doc: Any, source: RunSource) -> None:
        from bokeh.models import ColumnDataSource, Div

        self.doc = doc
        self.source = source
        self.version = -1
        self.slow_shown_s = -math.inf
        self.slow_pending = False
        self.settings_thinned = False
        self.spans: dict[str, tuple[float, float]] = {}
        """The axis ranges this page set last, by name (a user's zoom is not undone)."""
        self.status = Div(text="", name="status", sizing_mode="stretch_width")
        self.latest = ColumnDataSource(
            {"shot": [-1], "timestamp_s": [math.nan], "shots_done": [0], "shots_total": [0]},
            name="latest",
        )
        rows: list[Any] = [Div(text=f"<h2>labpgt view: {_escape(str(source.path))}</h2>")]
        rows.append(self.status)
        if source.kind in ("acquire", "calibration"):
            rows.extend(self._spectrum_models())
            if source.kind == "calibration":
                rows.append(self._response_models())
            rows.extend(self._settings_models())
        else:
            rows.extend(self._train_models())
        from bokeh.layouts import column

        doc.add_root(column(*rows, sizing_mode="stretch_width"))
        doc.add_root(self.latest)  # shown in the title and status; a root so pages can read it
        doc.title = f"labpgt view: {source.path.name}"
        self.update()
        doc.add_periodic_callback(self.update, POLL_MS)

    # acquisition and calibration
    def _spectrum_models(self) -> list[Any]:
        from bokeh.models import ColumnDataSource

        self.spectrum = ColumnDataSource(
            {"frequency_ghz": np.zeros(0), "power_dbm": np.zeros(0)}, name="spectrum"
        )
        self.drive = ColumnDataSource({"drive_ghz": np.zeros(0)}, name="drive")
        from bokeh.models import Range1d

        fig = _figure(
            "Latest spectrum",
            "frequency (GHz)",
            "power (dBm)",
            height=340,
            x_range=Range1d(0, 1, name="spectrum_x"),
            y_range=Range1d(-100, 0, name="spectrum_y"),
        )
        fig.line(
            "frequency_ghz", "power_dbm", source=self.spectrum, line_width=1.5, legend_label="trace"
        )
        fig.vspan(
            x="drive_ghz",
            source=self.drive,
            line_color="#d62728",
            line_dash="dashed",
            line_width=2,
            legend_label="drive frequency",
        )
        fig.legend.location = "top_right"
        self.spectrum_fig = fig
        return [fig]

    def _settings_models(self) -> list[Any]:
        from bokeh.models import ColumnDataSource, Range1d

        self.settings = ColumnDataSource(
            {"x": np.zeros(0), "drive_ghz": np.zeros(0), "drive_dbm": np.zeros(0), "bias_a": []},
            name="settings",
        )
        figs = []
        x_range = Range1d(0, 1, name="settings_x")
        for col, title, unit, colour in (
            ("drive_ghz", "Drive frequency", "frequency (GHz)", COLOURS[0]),
            ("drive_dbm", "Drive power", "power (dBm)", COLOURS[1]),
            ("bias_a", "Bias current", "current (A)", COLOURS[2]),
        ):
            y_range = Range1d(0, 1, name=f"settings_{col}")
            fig = _figure(
                f"{title} over the run", "", unit, height=170, x_range=x_range, y_range=y_range
            )
            fig.scatter("x", col, source=self.settings, size=3, color=colour)
            figs.append(fig)
        self.settings_figs = figs
        return figs

    def _response_models(self) -> Any:
        from bokeh.models import ColumnDataSource

        self.response = ColumnDataSource(
            {"xs": [], "ys": [], "label": [], "colour": []}, name="response"
        )
        fig = _figure(
            "Response curves: sensitivity vs drive frequency",
            "drive frequency (GHz)",
            "sensitivity / noise (noise std per step)",
            height=300,
        )
        fig.multi_line(
            "xs",
            "ys",
            source=self.response,
            line_color="colour",
            legend_field="label",
            line_width=2,
        )
        fig.legend.location = "top_left"
        self.response_fig = fig
        return fig

    # train
    def _train_models(self) -> list[Any]:
        from bokeh.models import ColumnDataSource

        cols = ("epoch", "train_loss", "val_loss", "test_loss", "train_acc_pct", "val_acc_pct")
        self.metrics = ColumnDataSource(
            {c: np.zeros(0) for c in (*cols, "test_acc_pct", "queries")}, name="metrics"
        )
        self.batches = ColumnDataSource(
            {"step": np.zeros(0), "batch_loss": np.zeros(0), "queries": np.zeros(0)},
            name="batches",
        )
        loss = _figure("Loss per epoch", "epoch", "loss (cross-entropy)")
        acc = _figure("Accuracy per epoch", "epoch", "accuracy (%)", x_range=loss.x_range)
        queries = _figure(
            "Ring queries (cumulative, training)", "epoch", "queries", x_range=loss.x_range
        )
        batch = _figure("Batch loss per step", "training step", "batch loss")
        for fig in (loss, acc, queries):
            _integer_ticks(fig)
        for name, colour in (("train", COLOURS[0]), ("val", COLOURS[1]), ("test", COLOURS[2])):
            loss.line("epoch", f"{name}_loss", source=self.metrics, color=colour, legend_label=name)
            loss.scatter("epoch", f"{name}_loss", source=self.metrics, color=colour, size=5)
            acc.line(
                "epoch", f"{name}_acc_pct", source=self.metrics, color=colour, legend_label=name
            )
            acc.scatter("epoch", f"{name}_acc_pct", source=self.metrics, color=colour, size=5)
        queries.line("epoch", "queries", source=self.metrics, color=COLOURS[3], line_width=2)
        queries.scatter("epoch", "queries", source=self.metrics, color=COLOURS[3], size=5)
        batch.line("step", "batch_loss", source=self.batches, color=COLOURS[0], alpha=0.7)
        loss.legend.location = acc.legend.location = "top_right"
        return [loss, acc, queries, batch]

    # updates
    def update(self) -> None:
        self.source.poll()
        snap = self.source.snapshot
        if self.source.version != self.version:
            self.version = self.source.version
            if snap.kind == "train":
                self.status.text = _escape(snap.status)
                self._show_train(snap)
                return
            self._show_spectrum(snap)
            if snap.kind == "calibration":
                self._show_response(snap)
            self.slow_pending = True
        if snap.kind == "train" or not self.slow_pending:
            return
        now = time.monotonic()
        if (
            now - self.slow_shown_s >= SETTINGS_EVERY_S
            or snap.shots_done == snap.shots_total
            or not snap.spectrum_dbm.size
            or not len(self.settings.data["x"])
        ):
            self.slow_shown_s = now
            self.slow_pending = False
            self.status.text = _escape(snap.status)
            self._show_settings(snap)

    def _cover(self, name: str, rng: Any, low: float, high: float) -> None:
        """Widen the Range1d ``rng`` to hold [low, high] if the span this page set last for
        ``name`` does not (never narrowed: the axes stay put from one redraw to the next)."""
        if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
            return
        old = self.spans.get(name)
        if old is not None:
            if old[0] <= low and high <= old[1]:
                return
            low, high = min(low, old[0]), max(high, old[1])
        self.spans[name] = (low, high)
        rng.update(start=low, end=high, reset_start=low, reset_end=high)

    def _show_spectrum(self, snap: Snapshot) -> None:
        if snap.spectrum_dbm.size:
            shown = self.spectrum.data["frequency_ghz"]
            if len(shown) == snap.frequency_hz.size:  # the axis is there: send the trace only
                self.spectrum.data["power_dbm"] = snap.spectrum_dbm
            else:  # another frequency axis: sent, and the x range set to it
                ghz = snap.frequency_hz / 1e9
                self.spectrum.data = {"frequency_ghz": ghz, "power_dbm": snap.spectrum_dbm}
                self.spans.pop("spectrum_x", None)
                x_range = self.spectrum_fig.x_range
                self._cover("spectrum_x", x_range, float(ghz.min()), float(ghz.max()))
            fig = self.spectrum_fig
            low, high = _finite_span(snap.spectrum_dbm)
            if math.isfinite(low):  # 5 dB steps, at least 1 dB clear of the trace
                low, high = 5 * math.floor(low / 5 - 0.2), 5 * math.ceil(high / 5 + 0.2)
                self._cover("spectrum_y", fig.y_range, low, high)
        drive = f"{snap.drive_hz / 1e9:.4f} GHz" if math.isfinite(snap.drive_hz) else ""
        self.drive.data = {"drive_ghz": np.array([snap.drive_hz / 1e9]) if drive else np.zeros(0)}
        when = (
            _dt.datetime.fromtimestamp(snap.shot_timestamp_s).strftime("%H:%M:%S.%f")[:-3]
            if math.isfinite(snap.shot_timestamp_s)
            else ""
        )
        what = f"shot {snap.shot}" if snap.shot >= 0 else "last stored shot"
        if drive:
            self.spectrum_fig.title.text = (
                f"Latest spectrum ({what}): drive {drive} at {snap.drive_dbm:.1f} dBm, "
                f"bias {snap.bias_a:.3f} A" + (f"; read at {when}" if when else "")
            )
        self.latest.data = {
            "shot": [snap.shot],
            "timestamp_s": [snap.shot_timestamp_s],
            "shots_done": [snap.shots_done],
            "shots_total": [snap.shots_total],
        }

    def _show_settings(self, snap: Snapshot) -> None:
        s = snap.settings
        if not len(s):
            return
        columns = {
            "x": snap.settings_x,
            "drive_ghz": s[:, 0] / 1e9,
            "drive_dbm": s[:, 1],
            "bias_a": s[:, 2],
        }
        shown = len(self.settings.data["x"])
        if snap.settings_thinned or self.settings_thinned or len(s) < shown:
            self.settings.data = columns  # a new thinning: every point moves
        elif len(s) > shown:  # the same shots and more: only the new points go to the page
            self.settings.stream({name: values[shown:] for name, values in columns.items()})
        self.settings_thinned = snap.settings_thinned
        if self.settings_figs[-1].xaxis.axis_label != snap.settings_x_label:
            self.settings_figs[-1].xaxis.axis_label = snap.settings_x_label
        self._cover_settings(snap, columns)

    def _cover_settings(self, snap: Snapshot, columns: dict[str, np.ndarray]) -> None:
        """The settings plots' ranges: y over every shot planned (else those shown), x to
        the end of the run (estimated from its pace when x is time), widened when passed."""
        x = snap.settings_x
        last = float(x[-1])
        if last > self.spans.get("settings_x", (0.0, -math.inf))[1]:
            end = float(snap.shots_total)
            if not snap.settings_x_label.startswith("shot number"):
                end = last * snap.shots_total / max(snap.shots_done, 1)
            self._cover("settings_x", self.settings_figs[0].x_range, 0.0, 1.05 * max(end, last))
        span = snap.settings_span
        names = ("drive_ghz", "drive_dbm", "bias_a")
        for i, (fig, name) in enumerate(zip(self.settings_figs, names, strict=True)):
            scale = 1e9 if name == "drive_ghz" else 1.0
            low, high = (
                (span[0, i] / scale, span[1, i] / scale)
                if span.shape[0] == 2
                else _finite_span(columns[name])
            )
            pad = 0.05 * (high - low) or 0.05 * max(abs(high), 1e-3)
            self._cover(f"settings_{name}", fig.y_range, float(low - pad), float(high + pad))

    def _show_response(self, snap: Snapshot) -> None:
        r = snap.response
        if not r:
            return
        drive_ghz = r["drive_hz"] / 1e9
        self.response.data = {
            "xs": [drive_ghz for _ in r["bias_a"]],
            "ys": list(r["sensitivity"]),
            "label": [f"bias {b:.2f} A" for b in r["bias_a"]],
            "colour": [COLOURS[i % len(COLOURS)] for i in range(len(r["bias_a"]))],
        }
        quantity = r.get("quantity", "sensitivity / noise (noise std per step)")
        self.response_fig.yaxis.axis_label = quantity
        what = "sensitivity" if "quantity" not in r else "feature change, grid measured so far,"
        self.response_fig.title.text = (
            f"Response curves: {what} vs drive frequency at {r['drive_dbm']:.1f} dBm"
        )

    def _show_train(self, snap: Snapshot) -> None:
        c = snap.curves
        if "epoch" in c:
            n = c["epoch"].size
            nan = np.full(n, np.nan)
            self.metrics.data = {
                "epoch": c["epoch"],
                **{f"{k}_loss": c.get(f"{k}_loss", nan) for k in ("train", "val", "test")},
                **{f"{k}_acc_pct": 100 * c.get(f"{k}_acc", nan) for k in ("train", "val", "test")},
                "queries": c.get("queries", nan),
            }
        if "batches.step" in c and "batches.batch_loss" in c:
            self.batches.data = {
                "step": c["batches.step"],
                "batch_loss": c["batches.batch_loss"],
                "queries": c.get("batches.queries", np.full(c["batches.step"].size, np.nan)),
            }


def _finite_span(values: np.ndarray) -> tuple[float, float]:
    """(least, greatest) of the finite values; (NaN, NaN) when there are none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return (float(finite.min()), float(finite.max())) if finite.size else (math.nan, math.nan)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---- the server ------------------------------------------------------------------------------
def serve(
    source: RunSource,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    allow_origin: list[str] | None = None,
    parent_pid: int | None = None,
    announce: Any = print,
) -> None:
    """Serve the page until stopped (Ctrl-C), or until a --live run ended and no page is open.

    ``port`` None: `DEFAULT_PORT`, or the next free one (said in the announcement). A port
    given and in use is a one-line `UserError` that names a free one.
    """
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server
    from tornado.ioloop import IOLoop, PeriodicCallback

    note = ""
    if port is None:
        port = free_port(host, DEFAULT_PORT)
        if port != DEFAULT_PORT:
            note = f" (port {DEFAULT_PORT} is in use)"
    origins = {f"{name}:{port}" for name in ("localhost", "127.0.0.1", host)}
    origins.update(allow_origin or [])
    app = Application(FunctionHandler(lambda doc: Page(doc, source)))
    try:
        server = Server(
            {"/": app},
            io_loop=IOLoop.current(),
            address=host,
            port=port,
            allow_websocket_origin=sorted(origins),
            check_unused_sessions_milliseconds=5000,
            unused_session_lifetime_milliseconds=10000,
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = free_port(host, port + 1)
            raise UserError(
                f"port {port} on {host} is in use (another view or server?): "
                f"try --port {other}, which is free now"
            ) from None
        raise UserError(f"cannot listen on {host}:{port}: {os.strerror(exc.errno or 0)}") from None
    server.start()
    announce(f"live view of {source.path}: {url_for(host, port)}{note}")
    if parent_pid is not None:
        _stop_when_orphaned(server, parent_pid, PeriodicCallback)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _stop_when_orphaned(server: Any, parent_pid: int, periodic: Any) -> None:
    """Stop `LINGER_S` after the run's process ended and while no page is open."""
    state: dict[str, float | None] = {"idle_since": None}

    def check() -> None:
        # the run started this process: once the run ends, this one has another parent
        if os.getppid() == parent_pid or server.get_sessions("/"):
            state["idle_since"] = None
            return
        now = time.monotonic()
        since = state["idle_since"]
        if since is None:
            state["idle_since"] = now
        elif now - since > LINGER_S:
            print("the run ended and no page is open: the view stops", flush=True)
            server.io_loop.stop()

    periodic(check, 2000).start()


def main_child(argv: list[str]) -> None:
    """`python -m labpgt.live RUN --kind KIND --port N --parent-pid PID` (for --live)."""
    import argparse

    from labpgt.live.source import wait_kind

    parser = argparse.ArgumentParser(prog="python -m labpgt.live")
    parser.add_argument("run", type=Path)
    parser.add_argument("--kind", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)  # the run this view watches comes first on a busy machine
    try:
        kind = wait_kind(args.run, args.kind)
        serve(
            RunSource(args.run, kind),
            host=args.host,
            port=args.port,
            parent_pid=args.parent_pid,
            announce=lambda text: print(text, flush=True),
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
