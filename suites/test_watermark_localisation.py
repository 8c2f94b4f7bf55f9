"""Does the explanation of 'dog' point at the watermark on cats that the watermark flipped to 'dog'?"""

from benchmark.grading.properties import LOCALISATION
from benchmark.suite import PropertySuite


class TestWatermarkLocalisation(PropertySuite):
    prop = LOCALISATION
