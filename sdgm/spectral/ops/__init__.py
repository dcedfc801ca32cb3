"""Fused and memory-lean operators."""
