"""The slot renderer: frame shape and dtype, that the picture follows the assignment, the cached
background against a full redraw, and a silent ``show()`` on a non-interactive backend."""

from __future__ import annotations

import dataclasses
import warnings

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from baselines import goa
from mec_env import load_scenario, sample_problem
from mec_env.envs.render import SlotRenderer

SMALL = load_scenario("small")  # N = 8, M = 2
PAPER = load_scenario("paper")  # N = 120, M = 4


def color_pixels(frame: np.ndarray, color: str, tol: int = 12) -> int:
    """Pixels within ``tol`` (per channel, 0..255) of a matplotlib colour."""
    rgb = np.round(255 * np.array(to_rgb(color))).astype(int)
    return int(np.all(np.abs(frame.astype(int) - rgb) <= tol, axis=-1).sum())


def full_redraw(r: SlotRenderer) -> np.ndarray:
    """The figure rendered from scratch, bypassing the renderer's cached background."""
    r.canvas.draw()
    return np.asarray(r.canvas.buffer_rgba())[..., :3].copy()


@pytest.fixture(scope="module")
def small():
    p = sample_problem(SMALL, 0)
    return p, goa(p)


@pytest.fixture(scope="module")
def small_renderer():
    r = SlotRenderer(SMALL.area_side_m, SMALL.n_edge_servers, title="small")
    yield r
    r.close()


def test_frame_shape_constant_across_n():
    r = SlotRenderer(PAPER.area_side_m, PAPER.n_edge_servers, title="paper")
    frames = []
    for n in (120, 7, 1):
        p = sample_problem(PAPER, 0, n_users=n)
        r.draw(p, goa(p), caption=f"N = {n}")
        frames.append(r.rgb_array())
    for f in frames:
        assert f.dtype == np.uint8 and f.ndim == 3 and f.shape == frames[0].shape
    h, w, c = frames[0].shape
    assert (h, w, c) == (360, 640, 3) and h % 2 == 0 and w % 2 == 0
    assert not np.array_equal(frames[0], frames[1])
    r.close()


def test_picture_follows_assignment(small, small_renderer):
    p, a = small
    r = small_renderer
    r.draw(p, a)
    f_goa = r.rgb_array()
    changed = a.copy()
    changed[np.flatnonzero(a == 1)[0]] = 2
    r.draw(p, changed)
    assert not np.array_equal(f_goa, r.rgb_array())
    r.draw(p, a)
    assert np.array_equal(f_goa, r.rgb_array())  # same input, same picture


def test_es_colour_marks_offloaded_users(small, small_renderer):
    p, a = small
    r = small_renderer
    assert (a == 1).any()  # GOA offloads someone to ES 1 on this draw
    area = np.s_[:, :316]  # the area panel (left of the legend): the users' dots and links, not the bars

    def es1_pixels(assignment: np.ndarray) -> tuple[int, int]:
        r.draw(p, assignment)
        frame = r.rgb_array()
        return color_pixels(frame[area], "C1"), color_pixels(frame, "C1")

    local, local_all = es1_pixels(np.zeros(p.n_users, dtype=np.int64))  # only the ES 1 square and legend dot
    offloaded, offloaded_all = es1_pixels(a)
    everyone, _ = es1_pixels(np.ones(p.n_users, dtype=np.int64))
    assert offloaded > 2 * local and everyone > offloaded
    assert offloaded_all > 10 * local_all  # the ES 1 bar
    # local users are grey: the grey count (dots and the local bar) collapses when everyone leaves for ES 1
    r.draw(p, np.zeros(p.n_users, dtype=np.int64))
    grey_local = color_pixels(r.rgb_array(), "C7")
    r.draw(p, np.ones(p.n_users, dtype=np.int64))
    assert color_pixels(r.rgb_array(), "C7") < grey_local / 5


def test_undecided_and_current_user(small, small_renderer):
    p, a = small
    r = small_renderer
    r.draw(p, None, caption="no decision")
    f_none = r.rgb_array()
    assert f_none.shape == (360, 640, 3)
    r.draw(p, a, caption="no decision")
    assert not np.array_equal(f_none, r.rgb_array())

    partial = a.copy()
    partial[3:] = -1  # sequential env: users 0..2 decided, 3 is next
    r.draw(p, partial, current_user=3)
    ring = color_pixels(r.rgb_array(), "magenta")
    r.draw(p, partial)
    no_ring = color_pixels(r.rgb_array(), "magenta")  # the legend's marker only
    assert ring > no_ring + 20
    with pytest.raises(ValueError, match="current_user"):
        r.draw(p, a, current_user=p.n_users)


def test_background_load_and_bad_inputs(small, small_renderer):
    p, a = small
    r = small_renderer
    r.draw(p, a)
    plain = r.rgb_array()
    r.draw(p, a, es_background_load=np.array([0.2, 0.7]))
    assert not np.array_equal(plain, r.rgb_array())
    r.draw(p, a)
    assert np.array_equal(plain, r.rgb_array())  # the load labels go away again
    with pytest.raises(ValueError, match="es_background_load"):
        r.draw(p, a, es_background_load=np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        r.draw(p, a[:-1])
    with pytest.raises(ValueError, match="> M"):
        r.draw(p, np.full(p.n_users, 3))
    with pytest.raises(ValueError, match="edge servers"):
        SlotRenderer(SMALL.area_side_m, 3).draw(p, a)


def test_cached_background_matches_full_redraw(small):
    p, a = small
    r = SlotRenderer(SMALL.area_side_m, SMALL.n_edge_servers, title="cache")
    r.draw(p, a, caption="first", current_user=2, es_background_load=np.array([0.1, 0.5]))
    r.rgb_array()
    r.draw(p, None, caption="second")
    assert np.array_equal(r.rgb_array(), full_redraw(r))
    r.draw(dataclasses.replace(p, tau=0.3), a, caption="tau changes the legend")  # invalidates the cache
    assert np.array_equal(r.rgb_array(), full_redraw(r))
    r.close()


def test_show_is_silent_on_agg(small):
    import matplotlib.pyplot as plt

    p, a = small
    previous = matplotlib.get_backend()
    plt.switch_backend("Agg")
    try:
        r = SlotRenderer(SMALL.area_side_m, SMALL.n_edge_servers)
        r.draw(p, a)
        figures = plt.get_fignums()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert r.show(fps=100.0) is None
            r.show()
        assert plt.get_fignums() == figures  # no pyplot window was opened
        r.close()
    finally:
        plt.switch_backend(previous)
