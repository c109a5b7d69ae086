"""The offline stage: decode media, run frozen encoders, write features into a FeatureStore.

Nothing here is imported by `vdial.train` or `vdial.evaluate`: training needs only the store.
"""
