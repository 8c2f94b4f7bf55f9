"""Does removing what the explanation calls relevant change the model's 'dog' score (and the rest not)?"""

from benchmark.grading.properties import FAITHFULNESS
from benchmark.suite import PropertySuite


class TestFaithfulness(PropertySuite):
    prop = FAITHFULNESS
