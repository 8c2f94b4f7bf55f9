"""Are explanations stable under input noise that does not change the prediction?"""

from benchmark.grading.properties import NOISE_STABILITY
from benchmark.suite import PropertySuite


class TestNoiseStability(PropertySuite):
    prop = NOISE_STABILITY
