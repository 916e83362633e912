"""Λ-DARTS on NAS-Bench-201, in AutoDL's layout (the doors are under ``NAS-Bench201/``)."""
