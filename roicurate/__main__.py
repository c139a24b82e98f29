"""``python -m roicurate`` works like ``roicurate``."""
from roicurate.cli import main

main()
