"""Candidate review: colour stamps, blind grading by several graders, and the ranking.

- :mod:`lensdask.review.stamps`: g/r/i colour stamps and r-band stamps of the candidates,
  one task per tile, and contact sheets in ranked order (PNG).
- :mod:`lensdask.review.grades`: the SQLite store of graders, access tokens and grades
  (grades CSV files are read and written by :mod:`lensdask.formats.grades`).
- :mod:`lensdask.review.server`: the grading web page (``lensdask inspect``).
- :mod:`lensdask.review.rank`: ``s_ave``, ``s_rms``, ``p_hum``, ``P = p_cnn * p_hum`` and
  the quality classes, the table writers, the LaTeX table and the p_CNN-p_hum plot.
- :mod:`lensdask.review.zooniverse`: a Zooniverse subject manifest and the import of
  its classifications as grades.
"""
