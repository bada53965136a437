MESSAGE = "installed in the venv only"
