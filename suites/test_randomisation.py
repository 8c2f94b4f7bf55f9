"""Do explanations change when the model's weights are randomised (Adebayo et al. 2018)?"""

from benchmark.grading.properties import RANDOMISATION
from benchmark.suite import PropertySuite


class TestRandomisation(PropertySuite):
    prop = RANDOMISATION
