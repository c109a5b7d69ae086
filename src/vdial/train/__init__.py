"""The training stage: dialog datasets over a feature store, models, the loop, prediction.

Never imports `vdial.extract`: training runs on a machine that has only the store.
"""
