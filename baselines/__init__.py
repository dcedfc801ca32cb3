"""Baseline language models (one file each), built through sdgm.build_model like SDGM itself.

Models only: the trainer, evaluator and report in sdgm/ serve every model without special cases.
"""
