"""The sweep's cycle model equals the RTL, on three points of the default sweep.

Each point is built on Verilator (`tb.session`, one build folder per point) with memory depths
just large enough for a small random network, and driven by the host firmware. The core's busy
cycles (the link's STATUS counter) must equal the cycles `scripts.explore` reports for that
point, which come from the cycle model on an unbounded-memory copy of the configuration.
"""

import numpy as np
import pytest

from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.random_model import random_images, random_int_model
from scripts import explore
from scripts.explore import Point
from tb.session import Session

#: Memories for a size-8, dim-8 random network; the array comes from the sweep point.
BASE = ArrayConfig(name="base", act_depth=1024, weight_depth=512, param_depth=256,
                   step_depth=1024, program_depth=32, input_depth=128, acc_bits=20,
                   membrane_bits=34)

#: (`make test` checks the 8-lane point; the other two differ from it in lanes and rows alone:
#: `make test-extended`)
POINTS = [pytest.param(Point(4, 4, 4, 8), marks=pytest.mark.extended),
          pytest.param(Point(2, 4, 4, 8), marks=pytest.mark.extended), Point(4, 4, 8, 8)]


def assert_in_default_sweep(point: Point):
    assert point.pe_rows in explore.DEFAULT_ROWS and point.pe_cols in explore.DEFAULT_COLS
    assert point.lanes in explore.DEFAULT_LANES
    assert point.weight_bits in explore.DEFAULT_WEIGHT_BITS


@pytest.mark.parametrize("point", POINTS, ids=lambda p: p.label.replace(" ", "_"))
def test_cycle_model_equals_rtl(point):
    assert_in_default_sweep(point)
    config = explore.array_config(point, BASE)
    model = random_int_model("ms", seed=point.pe_rows + point.lanes, size=8, dim=8)
    images = random_images(model, 2, seed=point.pe_cols)
    predicted = compile_network(
        model, explore.modelling_config(point, model.weight_bits)).cycles.total
    net = compile_network(model, config)
    assert net.cycles.total == predicted  # memory depths do not change the schedule
    expected, _ = golden.run(model, images, record=False)

    with Session.open(config, name=f"explore_{config.name}", timeout=300) as session:
        acc = session.accelerator(timeout=120)
        acc.load(net)
        before = acc.status().busy_cycles
        logits = acc.infer(images)
        busy = acc.status().busy_cycles - before
    np.testing.assert_array_equal(logits, expected)
    assert busy == len(images) * predicted
