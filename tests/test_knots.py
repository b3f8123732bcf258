"""steepest_piece: the steepest linear piece of a network function, against hand-built
networks and a fine sampling of the function."""
import numpy as np
import pytest

from relunet import Arch, forward
from relunet.construct import WF_ARCH, build_wf
from relunet.knots import steepest_piece


def _ramp(k, x0):
    """y = relu(k (x - x0)) - relu(k (x - x0) - 1): 0 left of x0, 1 right of x0 + 1/k,
    slope k in between."""
    arch = Arch(1, 2)
    return arch, arch.pack({"W1": [[k], [k]], "b1": [-k * x0, -k * x0 - 1.0],
                            "Wout": [[1.0, -1.0]], "bout": [0.0]})


def test_a_ramp_between_two_training_points_is_hidden():
    arch, w = _ramp(100.0, 0.05)
    slope, width, hidden = steepest_piece(w, arch, x_data=[0.0, 0.1, 0.2])
    assert slope == pytest.approx(100.0, rel=1e-12) and width == pytest.approx(0.01, rel=1e-9)
    assert hidden
    # a training point inside the ramp: not hidden
    assert not steepest_piece(w, arch, x_data=[0.0, 0.055, 0.2])[2]
    # a point exactly on its end is not inside
    assert steepest_piece(w, arch, x_data=[0.05, 0.06])[2]


def test_the_interval_clips_the_piece():
    arch, w = _ramp(2.0, 0.5)                  # the ramp runs over [0.5, 1.0]
    slope, width, _ = steepest_piece(w, arch, lo=-1.0, hi=0.75)
    assert slope == pytest.approx(2.0) and width == pytest.approx(0.25)
    slope, width, _ = steepest_piece(w, arch, lo=-1.0, hi=0.4)    # only the flat part
    assert slope == 0.0 and width == pytest.approx(1.4)


def test_matches_a_fine_sampling_of_w_f_and_random_networks():
    from relunet import init_stack
    xs = np.linspace(-1.0, 1.0, 400001)
    W = np.vstack([build_wf()[None], init_stack(WF_ARCH, seeds=range(3))])
    for w in W:
        y = np.asarray(forward(w[None], WF_ARCH, xs)).ravel()
        sampled = np.abs(np.diff(y)).max() / (xs[1] - xs[0])
        slope = steepest_piece(w, WF_ARCH)[0]
        assert slope >= sampled * (1 - 1e-6)            # no grid step is steeper
        assert slope == pytest.approx(sampled, rel=1e-3)   # and one is about as steep
    assert steepest_piece(build_wf(), WF_ARCH)[0] == pytest.approx(23.56, abs=0.01)


def test_bad_interval():
    arch, w = _ramp(1.0, 0.0)
    with pytest.raises(ValueError, match="lo < hi"):
        steepest_piece(w, arch, lo=1.0, hi=0.0)
