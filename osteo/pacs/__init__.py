"""The PACS as an input (issue 27): `osteo pacs pull` finds the hip and pelvis radiograph studies of a date
range (DICOMweb QIDO-RS, or DIMSE C-FIND), retrieves the series in scope (WADO-RS, or C-GET) into the inbox
that the refresh reads, and records each instance (db/pacs.py) so that nothing is fetched twice; `osteo pacs
receive` files what a modality or the PACS pushes (C-STORE) into the same inbox.

    target.py    which PACS, over which transport (settings); its faults
    found.py     a series as a query found it, and whether it is in scope
    inbox.py     where an instance is filed, written atomically
    dicomweb.py  QIDO-RS and WADO-RS through dicomweb-client
    dimse.py     C-FIND and C-GET through pynetdicom
    pull.py      the pull: find, keep what is in scope and not yet held, retrieve, record (PullCounts)
    receive.py   the C-STORE listener with its allow-list of calling AE titles
"""
