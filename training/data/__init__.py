"""Data sets for training: synthetic phantom chest radiographs (`phantoms`) and, later, site data."""
