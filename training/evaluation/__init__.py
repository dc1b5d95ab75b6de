"""Evaluation of drafted reports: the findings labeler (`labeler`) and report metrics (`metrics`)."""
