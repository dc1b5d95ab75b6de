import sys
from pathlib import Path

# the labeler's sentence table lives next to the tests
sys.path.insert(0, str(Path(__file__).parent))
