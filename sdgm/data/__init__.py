"""The corpora: where a split's text comes from (sources: the copies shipped in corpora/, a URL or a Hugging Face
dataset, each verified by its SHA-256), what the text may hold, checked as it arrives, and the errors of this part
(checks), and word-level tokenization into the id tensors every model trains on (tokens). It imports only
sdgm.common.
"""
