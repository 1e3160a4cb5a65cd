"""GLIP in pure PyTorch."""
