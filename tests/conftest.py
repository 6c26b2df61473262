import os
import sys

# tests import their helper modules (golden.py) by name
sys.path.insert(0, os.path.dirname(__file__))
