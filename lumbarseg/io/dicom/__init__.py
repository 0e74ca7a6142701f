"""DICOM studies in: find the series of a study folder (:mod:`.study`), choose the one to segment
(:mod:`.choice`), and talk to a DICOMweb server (:mod:`.web`). Pixel data are read by
:func:`lumbarseg.io.readers.read_dicom_series`; DICOM outputs are written by :mod:`lumbarseg.inference.dicom`.
"""
