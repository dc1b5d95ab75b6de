"""Training-side code of RadDraft: data sets, training, export and evaluation.

Importing this package is cheap; heavy dependencies (torch, matplotlib, ...) load only in the modules
that need them. The runtime packages (dicom_node, engine, desktop) never import it.
"""
