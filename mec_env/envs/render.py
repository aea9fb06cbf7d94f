"""A matplotlib picture of one time slot, for the environments' ``"rgb_array"`` and ``"human"`` render modes.

:class:`SlotRenderer` draws on a :class:`matplotlib.figure.Figure` with its own Agg canvas, so
``rgb_array`` works headless and never touches pyplot's global backend; only :meth:`SlotRenderer.show`
imports pyplot.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
from matplotlib import transforms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

FIG_SIZE_IN = (8.0, 4.5)
DPI = 80  # 8 x 4.5 in -> 640 x 360 px: both even, as video encoders need

# tab10 indices of ES 1, 2, ...: ES j is C{j} for j <= 6; grey C7 is skipped (it marks local users)
ES_TAB10 = (1, 2, 3, 4, 5, 6, 8, 9, 0)
LOCAL_RGBA = to_rgba("C7")
UNDECIDED_EDGE = to_rgba("0.45")
HOLLOW = (1.0, 1.0, 1.0, 0.0)
MUST_OFFLOAD_EDGE = (0.0, 0.0, 0.0, 1.0)


def es_color(j: int) -> tuple[float, float, float, float]:
    """RGBA of ES ``j`` (1-based), from tab10."""
    return to_rgba(f"C{ES_TAB10[(j - 1) % len(ES_TAB10)]}")


def user_sizes(alpha: np.ndarray) -> np.ndarray:
    """Marker area (pt^2) of users with uncertainty ``alpha``: larger means less sure."""
    return 10.0 + 90.0 * np.clip(alpha, 0.0, 1.0)


class SlotRenderer:
    """Draws one slot: the area, the ESs, users coloured by their decision, ES loads as bars.

    Left: the L x L area in metres; ES j is a square in tab10 colour C{j} labelled "ES j"; a user
    is a dot coloured like its ES when offloaded (with a faint line to it), grey when local and
    hollow when undecided (assignment None, or a negative entry); its area grows with alpha and
    users with alpha > tau (which must be offloaded, constraint 11) get a black edge. Right:
    users per ES n_j (plus the local count), optionally with each ES's background load.

    The figure and its artists are built once and updated in place, and every frame is
    640 x 360 x 3 uint8 whatever N. The static part (axes, ticks, legend, title) is rendered
    once and cached; later frames draw only what changed over it. Measured ``draw`` +
    ``rgb_array`` at N = 120, M = 4 (paper scenario, GOA's assignments, Agg, one core):
    11-14 ms a frame; the first frame, which renders the static part, ~90 ms.
    ``close()`` frees the figure: the renderer cannot draw afterwards.
    """

    def __init__(self, area_side_m: float, n_edge_servers: int, title: str = "") -> None:
        if not area_side_m > 0.0:
            raise ValueError(f"area_side_m must be > 0, got {area_side_m}")
        if int(n_edge_servers) < 1:
            raise ValueError(f"n_edge_servers must be >= 1, got {n_edge_servers}")
        self.area_side_m = float(area_side_m)
        self.n_edge_servers = m = int(n_edge_servers)
        # row 0: local, row j: ES j; indexed by the assignment to colour users in one gather
        self._palette = np.array([LOCAL_RGBA] + [es_color(j) for j in range(1, m + 1)])
        self._frame: np.ndarray | None = None  # cache of the last rendered frame; None when stale
        self._window: Any = None  # (pyplot figure, AxesImage) of human mode
        self._build(title)

    # --- figure ------------------------------------------------------------------------------

    def _build(self, title: str) -> None:
        """Create the figure and every artist once; ``draw`` only updates their data."""
        m, side = self.n_edge_servers, self.area_side_m
        self.fig = fig = Figure(figsize=FIG_SIZE_IN, dpi=DPI)
        self.canvas = FigureCanvasAgg(fig)
        w, h = fig.canvas.get_width_height()
        assert w % 2 == 0 and h % 2 == 0, (w, h)

        # fixed axes rectangles (no layout engine): frames keep one layout and drawing stays cheap
        bottom, height = 0.14, 0.74
        width = height * FIG_SIZE_IN[1] / FIG_SIZE_IN[0]  # a square area panel
        ax = fig.add_axes((0.075, bottom, width, height))
        self.ax_bars = axb = fig.add_axes((0.73, 0.24, 0.245, bottom + height - 0.24))  # room below for the loads
        self._title = fig.text(0.5, 0.955, title, ha="center", va="center", fontsize=11, fontweight="bold")
        self._caption = fig.text(0.5, 0.03, "", ha="center", va="center", fontsize=9)

        pad = 0.02 * side  # users on the border stay whole
        ax.set_xlim(-pad, side + pad)
        ax.set_ylim(-pad, side + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x (m)", fontsize=8, labelpad=1)
        ax.set_ylabel("y (m)", fontsize=8, labelpad=1)
        ax.tick_params(labelsize=7, length=2, pad=1)
        ax.add_patch(Rectangle((0, 0), side, side, fill=False, lw=0.6, ec="0.6", ls="--"))

        self._links = LineCollection([], linewidths=0.7, zorder=1)
        ax.add_collection(self._links)
        self._es = ax.scatter(np.zeros(m), np.zeros(m), s=170, marker="s", c=self._palette[1:],
                              edgecolors="black", linewidths=1.0, zorder=2)
        self._es_labels = [
            ax.annotate(f"ES {j}", (0.0, 0.0), xytext=(0, 8), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8, fontweight="bold", zorder=5,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75))
            for j in range(1, m + 1)
        ]
        self._users = ax.scatter(np.zeros(0), np.zeros(0), zorder=3)
        self._ring = ax.scatter([0.0], [0.0], s=300, facecolors="none", edgecolors="magenta", linewidths=2.0,
                                zorder=4, visible=False)

        handles = [Line2D([], [], ls="", marker="o", ms=5, mfc=LOCAL_RGBA, mec=LOCAL_RGBA, label="local")]
        handles += [Line2D([], [], ls="", marker="o", ms=5, mfc=c, mec=c, label=f"ES {j}")
                    for j, c in enumerate(self._palette[1:], start=1)]
        handles += [
            Line2D([], [], ls="", marker="o", ms=5, mfc="none", mec=UNDECIDED_EDGE, label="undecided"),
            Line2D([], [], ls="", marker="o", ms=5, mfc="0.85", mec="black", mew=1.2, label=r"$\alpha > \tau$"),
            Line2D([], [], ls="", marker="o", ms=9, mfc="none", mec="magenta", mew=2.0, label="next user"),
        ]
        self._legend = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0,
                                 fontsize=7.5, title="users\n(size ~ $\\alpha$)", title_fontsize=7.5,
                                 frameon=False, handletextpad=0.3, labelspacing=0.45)
        self._tau_text = self._legend.get_texts()[m + 2]

        # bars: local count in grey, then n_j per ES in the ES colours
        x = np.arange(m + 1)
        self._bars = axb.bar(x, np.zeros(m + 1), color=self._palette, edgecolor="black", linewidth=0.5, width=0.7)
        self._bar_text = [axb.text(i, 0.0, "", ha="center", va="bottom", fontsize=7) for i in x]
        # background loads go under the tick labels as plain texts, so they need no re-layout of the axis
        under = transforms.blended_transform_factory(axb.transData, axb.transAxes)
        self._bg_text = [axb.text(i, -0.085, "", transform=under, ha="center", va="top", fontsize=7, color="0.25")
                         for i in x[1:]]
        self._bg_title = axb.text(0.5, -0.165, "background load", transform=axb.transAxes, ha="center", va="top",
                                  fontsize=7, color="0.25")
        self._no_decision = axb.text(0.5, 0.5, "no decision\nyet", transform=axb.transAxes, ha="center",
                                     va="center", fontsize=8, color="0.4")
        ticks = ["local"] + ([f"ES {j}" for j in range(1, m + 1)] if m <= 4 else [str(j) for j in x[1:]])
        axb.set_xticks(x, ticks)
        axb.set_xlim(-0.6, m + 0.6)
        axb.set_yticks([])  # the counts are written on the bars; a static axis keeps the cached background valid
        axb.set_title("users per ES", fontsize=9, pad=3)
        axb.tick_params(labelsize=7, length=2, pad=1)
        axb.spines[["top", "right", "left"]].set_visible(False)

        # artists that change from draw to draw, in drawing order; the rest is rendered once and cached
        self._dynamic = [self._links, self._es, self._users, self._ring, *self._es_labels, *self._bars,
                         *self._bar_text, *self._bg_text, self._bg_title, self._no_decision, self._caption]
        self._background: Any = None  # Agg buffer region of the static part
        self._background_key: Any = None  # what the static part depends on (tau, in the legend)

    # --- public API ----------------------------------------------------------------------------

    def draw(self, problem: Any, assignment: Any = None, *, caption: str = "", current_user: int | None = None,
             es_background_load: Any = None) -> None:
        """Update the figure to ``problem`` (one unbatched :class:`~mec_env.problem.Problem`).

        ``assignment``: int (N,), 0 = local, j = ES j, negative = undecided (e.g. users after
        the sequential env's current one); None = nothing decided. ``current_user`` gets a ring;
        ``es_background_load`` (M,) fractions are printed under the ES bars.
        """
        if problem.user_xy is None or problem.es_xy is None:
            raise ValueError("SlotRenderer.draw needs a problem with user_xy and es_xy (one from sample_problem)")
        if problem.batch_shape:
            raise ValueError(f"SlotRenderer.draw takes one instance, got a batch {problem.batch_shape}; "
                             "use problem.instance(b)")
        n, m = problem.n_users, problem.n_edge_servers
        if m != self.n_edge_servers:
            raise ValueError(f"problem has M = {m} edge servers; this renderer was built for {self.n_edge_servers}")
        a = self._decisions(assignment, n, m)
        xy, es_xy, alpha = problem.user_xy, problem.es_xy, problem.alpha
        decided, offloaded = a >= 0, a > 0
        must = alpha > problem.tau

        face = np.where(decided[:, None], self._palette[np.maximum(a, 0)], HOLLOW)
        edge = np.where(decided[:, None], face, UNDECIDED_EDGE)
        edge[must] = MUST_OFFLOAD_EDGE
        self._users.set_offsets(xy)
        self._users.set_sizes(user_sizes(alpha))
        self._users.set_facecolors(face)
        self._users.set_edgecolors(edge)
        self._users.set_linewidths(np.where(must, 1.1, np.where(decided, 0.4, 0.8)))

        users, es = np.flatnonzero(offloaded), a[offloaded] - 1
        self._links.set_segments(np.stack([xy[users], es_xy[es]], axis=1))
        link_colors = self._palette[es + 1].copy()
        link_colors[:, 3] = 0.35  # faint: the links show association without hiding the dots
        self._links.set_colors(link_colors)

        self._es.set_offsets(es_xy)
        for label, pos in zip(self._es_labels, es_xy):
            label.xy = (float(pos[0]), float(pos[1]))
        self._tau_text.set_text(rf"$\alpha > \tau$ = {problem.tau:g}")

        if current_user is not None:
            if not 0 <= int(current_user) < n:
                raise ValueError(f"current_user = {current_user} is out of range 0..{n - 1}")
            self._ring.set_offsets(xy[int(current_user)][None])
            self._ring.set_sizes([float(user_sizes(alpha[int(current_user)])) + 220.0])
        self._ring.set_visible(current_user is not None)

        self._draw_bars(a, decided, m, es_background_load)
        self._caption.set_text(caption)
        self._frame = None

    def rgb_array(self) -> np.ndarray:
        """The last draw as an (H, W, 3) uint8 array (640 x 360 px)."""
        if self._frame is None:
            self._render()
            self._frame = np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
        return self._frame.copy()

    def show(self, fps: float = 4.0) -> None:
        """Show the last draw in a pyplot window without blocking; a no-op on non-interactive backends."""
        import matplotlib.pyplot as plt  # only human mode needs pyplot (and a GUI backend)
        from matplotlib.backends import BackendFilter, backend_registry

        backend = matplotlib.get_backend().lower()
        if backend in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE) or "inline" in backend:
            return  # nowhere to show it; plt.pause would only warn on every frame
        frame = self.rgb_array()
        if self._window is None or not plt.fignum_exists(self._window[0].number):  # first frame, or closed
            h, w = frame.shape[:2]
            fig = plt.figure(figsize=(w / DPI, h / DPI), dpi=DPI)
            fig.canvas.manager.set_window_title(self._title.get_text() or "MECOffload")
            ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
            ax.set_axis_off()
            self._window = (fig, ax.imshow(frame))
        else:
            self._window[1].set_data(frame)
        self._window[0].canvas.draw_idle()  # plt.pause redraws only the active figure, which may be another one
        plt.pause(1.0 / fps)

    def close(self) -> None:
        """Close the pyplot window, if any, and free the figure."""
        if self._window is not None:
            import matplotlib.pyplot as plt

            plt.close(self._window[0])
            self._window = None
        self.fig.clear()
        self._frame = None

    # --- helpers --------------------------------------------------------------------------------

    def _render(self) -> None:
        """Render into the canvas: restore the cached static part, then draw the dynamic artists on it.

        A full Agg draw of the figure costs ~50 ms, most of it laying out and rasterising the
        static text (ticks, labels, legend); blitting the dynamic artists over a cached copy is
        several times faster.
        """
        key = self._tau_text.get_text()
        if self._background is None or key != self._background_key:
            shown = [a.get_visible() for a in self._dynamic]
            for a in self._dynamic:
                a.set_visible(False)
            self.canvas.draw()
            self._background, self._background_key = self.canvas.copy_from_bbox(self.fig.bbox), key
            for a, v in zip(self._dynamic, shown):
                a.set_visible(v)
        else:
            self.canvas.restore_region(self._background)
        for a in self._dynamic:
            if a.get_visible():
                self.fig.draw_artist(a)

    @staticmethod
    def _decisions(assignment: Any, n: int, m: int) -> np.ndarray:
        """The assignment as int64 (N,), -1 = undecided; raises ValueError on a malformed one."""
        if assignment is None:
            return np.full(n, -1, dtype=np.int64)
        a = np.asarray(assignment)
        if a.shape != (n,):
            raise ValueError(f"assignment has shape {a.shape}; expected ({n},)")
        if a.dtype.kind not in "iu":
            if a.dtype.kind != "f" or not np.all(a == np.round(a)):
                raise ValueError(f"assignment has dtype {a.dtype} with non-integer entries")
        a = a.astype(np.int64)
        if a.size and a.max() > m:
            raise ValueError(f"assignment has entry {a.max()} > M = {m}")
        return np.maximum(a, -1)

    def _draw_bars(self, a: np.ndarray, decided: np.ndarray, m: int, background: Any) -> None:
        counts = np.bincount(a[decided], minlength=m + 1)  # [local, n_1, ..., n_M]
        any_decided = bool(decided.any())
        top = max(1, int(counts.max()))
        for bar, text, c in zip(self._bars, self._bar_text, counts):
            bar.set_height(c)
            text.set_position((bar.get_x() + bar.get_width() / 2, c + 0.02 * top))
            text.set_text(str(c) if any_decided else "")
        self.ax_bars.set_ylim(0, 1.15 * top)
        self._no_decision.set_visible(not any_decided)

        if background is not None:
            bg = np.asarray(background, dtype=np.float64)
            if bg.shape != (m,):
                raise ValueError(f"es_background_load has shape {bg.shape}; expected ({m},)")
            for text, f in zip(self._bg_text, bg):
                text.set_text(f"{100 * f:.0f}%")
        for text in self._bg_text:
            text.set_visible(background is not None)
        self._bg_title.set_visible(background is not None)
