"""The bottom layer: small dependency-free helpers every package may import (it imports none of ours)."""
