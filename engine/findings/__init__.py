"""Report language: the findings labeler (medspaCy ConText over target rules per finding), the checks run
before signing, and critical findings. It needs no model download: a blank spaCy pipeline plus rules."""
