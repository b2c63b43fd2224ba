"""Model code run by real model servers, each in its own virtual environment (see servers.py)."""
