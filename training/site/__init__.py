"""Site data: the de-identified training dataset built from the store's signed reports (`dataset.py`,
`deidentify.py`, `scrub.py`, `split.py`), and fine-tuning the current model on it (`finetune.py`,
`compare.py`)."""
