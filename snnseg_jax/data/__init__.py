"""Datasets. The real ones as distributed (PASCAL VOC2012 + SBD, DDD17): `loading.load_split`."""
