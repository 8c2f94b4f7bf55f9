"""How concentrated is the explanation of 'dog'? Informational: scores are reported, never pass/fail."""

from benchmark.grading.properties import COMPLEXITY
from benchmark.suite import PropertySuite


class TestComplexity(PropertySuite):
    prop = COMPLEXITY
