"""Build script. Metadata lives in pyproject.toml; native extensions are added here (optional)."""
from setuptools import setup

setup()
